package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// ErrMalformedToken is wrapped by every error about a token's syntax. The
// messages never contain the token itself, since it is a secret.
var ErrMalformedToken = errors.New("malformed token")

// Join token text format: JoinTokenPrefix followed by unpadded base64url of
//
//	version (1) | id (8) | secret (24) | CA fingerprint (32) | crc32c (4)
//
// The checksum (over all preceding bytes) turns copy-and-paste accidents into
// a clear error instead of an authentication failure.
const (
	JoinTokenPrefix  = "tdmj1."
	AdminTokenPrefix = "tdma1."

	joinTokenVersion = 1
	joinPayloadLen   = 1 + 8 + 24 + 32 + 4
	adminSecretLen   = 32
)

// tokenEncoding is unpadded base64url that rejects non-canonical encodings
// (stray low bits in the last character), so each token has exactly one text
// form. A function rather than a package variable to keep no mutable state.
func tokenEncoding() *base64.Encoding {
	return base64.RawURLEncoding.Strict()
}

// JoinToken is a one-time credential that lets a node join a cluster. The ID
// names the token in the cluster's store; the cluster keeps only Verifier(),
// never Secret. CAFingerprint lets the joining node authenticate the cluster
// (see PinnedTLS).
type JoinToken struct {
	ID            [8]byte
	Secret        [24]byte
	CAFingerprint [32]byte
}

// NewJoinToken returns a token with a random ID and secret for the cluster
// whose CA has the given fingerprint.
func NewJoinToken(caFingerprint [32]byte) (JoinToken, error) {
	t := JoinToken{CAFingerprint: caFingerprint}
	if _, err := rand.Read(t.ID[:]); err != nil {
		return JoinToken{}, fmt.Errorf("pki: generating join token: %w", err)
	}
	if _, err := rand.Read(t.Secret[:]); err != nil {
		return JoinToken{}, fmt.Errorf("pki: generating join token: %w", err)
	}
	return t, nil
}

// String returns the token's text form, "tdmj1.<base64url>". It contains the
// secret: do not log it.
func (t JoinToken) String() string {
	b := make([]byte, 0, joinPayloadLen)
	b = append(b, joinTokenVersion)
	b = append(b, t.ID[:]...)
	b = append(b, t.Secret[:]...)
	b = append(b, t.CAFingerprint[:]...)
	b = binary.BigEndian.AppendUint32(b, crc32c(b))
	return JoinTokenPrefix + tokenEncoding().EncodeToString(b)
}

// IDString returns the token ID in hex; safe to log and show.
func (t JoinToken) IDString() string {
	return hex.EncodeToString(t.ID[:])
}

// Verifier returns sha256(ID || Secret), which is what the cluster stores
// and compares (with ConstantTimeEqual) when a node presents the token.
func (t JoinToken) Verifier() [32]byte {
	var b [8 + 24]byte
	copy(b[:8], t.ID[:])
	copy(b[8:], t.Secret[:])
	return sha256.Sum256(b[:])
}

// ParseJoinToken parses the text form of a join token. Surrounding white
// space (such as the newline of a token file) is ignored; anything else that
// is not exactly a valid token is an error wrapping ErrMalformedToken.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	b, err := decodeToken(s, "join", JoinTokenPrefix, AdminTokenPrefix, "admin", joinPayloadLen)
	if err != nil {
		return JoinToken{}, err
	}
	body, sum := b[:joinPayloadLen-4], binary.BigEndian.Uint32(b[joinPayloadLen-4:])
	if crc32c(body) != sum {
		return JoinToken{}, fmt.Errorf("%w: join token checksum does not match (the token was mistyped or corrupted)", ErrMalformedToken)
	}
	if body[0] != joinTokenVersion {
		return JoinToken{}, fmt.Errorf("%w: unknown join token version %d (this build understands version %d)", ErrMalformedToken, body[0], joinTokenVersion)
	}
	var t JoinToken
	body = body[1:]
	body = body[copy(t.ID[:], body):]
	body = body[copy(t.Secret[:], body):]
	copy(t.CAFingerprint[:], body)
	return t, nil
}

// NewAdminToken returns a new admin bearer token, "tdma1." followed by
// unpadded base64url of 32 random bytes.
func NewAdminToken() (string, error) {
	var b [adminSecretLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pki: generating admin token: %w", err)
	}
	return AdminTokenPrefix + tokenEncoding().EncodeToString(b[:]), nil
}

// ParseAdminToken parses an admin bearer token and returns its 32 secret
// bytes. Surrounding white space is ignored; other defects are errors
// wrapping ErrMalformedToken.
func ParseAdminToken(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	return decodeToken(s, "admin", AdminTokenPrefix, JoinTokenPrefix, "join", adminSecretLen)
}

// AdminTokenVerifier parses an admin token and returns the SHA-256 of its
// secret bytes, which is what the cluster stores instead of the token.
func AdminTokenVerifier(s string) ([32]byte, error) {
	b, err := ParseAdminToken(s)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// ConstantTimeEqual compares two verifiers without leaking, through timing,
// how many leading bytes match.
func ConstantTimeEqual(a, b [32]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// decodeToken checks prefix and length and decodes the base64url body into
// exactly n bytes. otherPrefix/otherKind let it say "this is a join token,
// not an admin token" rather than just "wrong prefix".
func decodeToken(s, kind, prefix, otherPrefix, otherKind string, n int) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: %s token is empty", ErrMalformedToken, kind)
	}
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		if strings.HasPrefix(s, otherPrefix) {
			return nil, fmt.Errorf("%w: this is %s %s token, not %s %s token", ErrMalformedToken, article(otherKind), otherKind, article(kind), kind)
		}
		return nil, fmt.Errorf("%w: %s token must start with %q", ErrMalformedToken, kind, prefix)
	}
	if want := tokenEncoding().EncodedLen(n); len(rest) != want {
		return nil, fmt.Errorf("%w: %s token has %d characters after %q, want %d (truncated or extra characters?)", ErrMalformedToken, kind, len(rest), prefix, want)
	}
	// The decoder silently skips '\r' and '\n'; reject every character
	// outside the alphabet ourselves so a token has one text form.
	for i := 0; i < len(rest); i++ {
		if !isBase64URL(rest[i]) {
			return nil, fmt.Errorf("%w: %s token has an invalid character at position %d (want base64url: A-Z a-z 0-9 - _)", ErrMalformedToken, kind, len(prefix)+i+1)
		}
	}
	b, err := tokenEncoding().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %s token is not valid base64url: %w", ErrMalformedToken, kind, err)
	}
	if len(b) != n {
		// Unreachable given the checks above; kept so a future edit cannot
		// turn a short decode into an out-of-range slice.
		return nil, fmt.Errorf("%w: %s token decodes to %d bytes, want %d", ErrMalformedToken, kind, len(b), n)
	}
	return b, nil
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func article(kind string) string {
	if kind == "admin" {
		return "an"
	}
	return "a"
}

func crc32c(b []byte) uint32 {
	// MakeTable caches the Castagnoli table internally, so this is cheap
	// and avoids a package-level table variable.
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}
