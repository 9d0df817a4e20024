package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// SecretSize is the cluster secret's length in bytes.
const SecretSize = 32

// Prefix starts every sealed blob; its version names the construction
// (AES-256-GCM, HKDF-SHA256 key, length-prefixed associated data).
const Prefix = "tdms1."

// Purposes of keys derived from the cluster secret. A new kind of secret
// gets its own purpose.
const (
	PurposeFencePassword = "tandem fence password v1"
	// PurposeStorageKey seals external storages' keys (Ceph cephx keys).
	PurposeStorageKey = "tandem storage key v1"
	// PurposeCloudInit seals VMs' cloud-init seeds (user-data may hold
	// passwords and keys).
	PurposeCloudInit = "tandem cloud-init v1"
)

// ErrOpen is returned by Open for any blob that does not authenticate:
// tampered, sealed for another record or purpose, or under another
// cluster secret.
var ErrOpen = errors.New("sealed value does not authenticate (tampered, moved from another record, or sealed under another cluster secret)")

// NewSecret makes a cluster secret.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	return s, nil
}

// Box seals and opens values for one purpose.
type Box struct {
	aead cipher.AEAD
}

// New derives the key for purpose from the cluster secret.
func New(secret []byte, purpose string) (*Box, error) {
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("cluster secret is %d bytes, want %d", len(secret), SecretSize)
	}
	if purpose == "" {
		return nil, errors.New("sealing needs a purpose")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	return &Box{aead: aead}, nil
}

// NewFrom is New with the cluster secret that load reads (from a node's
// data directory); a nil load is a node without one.
func NewFrom(load func() ([]byte, error), purpose string) (*Box, error) {
	if load == nil {
		return nil, errors.New("this node has no cluster secret")
	}
	secret, err := load()
	if err != nil {
		return nil, err
	}
	return New(secret, purpose)
}

// additional encodes the associated data unambiguously: each part with its
// length, so ("ab","c") and ("a","bc") differ.
func additional(ad []string) []byte {
	var b []byte
	for _, p := range ad {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// Seal encrypts plain, bound to ad (e.g. node name and field name).
func (b *Box) Seal(plain []byte, ad ...string) (string, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	out := b.aead.Seal(nonce, nonce, plain, additional(ad))
	return Prefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a blob Seal made with the same ad.
func (b *Box) Open(blob string, ad ...string) ([]byte, error) {
	rest, ok := strings.CutPrefix(blob, Prefix)
	if !ok {
		return nil, errors.New("not a sealed value (want prefix " + Prefix + ")")
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) < b.aead.NonceSize()+b.aead.Overhead() {
		return nil, errors.New("sealed value is malformed")
	}
	n := b.aead.NonceSize()
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], additional(ad))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// IsSealed reports whether s looks like a blob Seal made.
func IsSealed(s string) bool { return strings.HasPrefix(s, Prefix) }
