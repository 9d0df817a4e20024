package sealed

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func box(t *testing.T, secret []byte, purpose string) *Box {
	t.Helper()
	b, err := New(secret, purpose)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b := box(t, secret, PurposeFencePassword)
	plain := []byte("s3cret-BMC-pw")
	blob, err := b.Seal(plain, "n1", "ipmi.password")
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(blob) || strings.Contains(blob, string(plain)) {
		t.Fatalf("blob %q", blob)
	}
	got, err := b.Open(blob, "n1", "ipmi.password")
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	again, _ := b.Seal(plain, "n1", "ipmi.password")
	if again == blob {
		t.Error("two seals of one value are equal: nonce reused")
	}

	// A blob moved to another node or field, or whose AD parts are split
	// differently, does not open.
	for _, ad := range [][]string{{"n2", "ipmi.password"}, {"n1", "redfish.password"}, {"n1ipmi.password"}, {"n1", "ipmi.", "password"}, nil} {
		if _, err := b.Open(blob, ad...); !errors.Is(err, ErrOpen) {
			t.Errorf("Open with AD %q: %v, want ErrOpen", ad, err)
		}
	}
	// Another purpose or another cluster secret does not open it.
	if _, err := box(t, secret, "tandem ceph key v1").Open(blob, "n1", "ipmi.password"); !errors.Is(err, ErrOpen) {
		t.Errorf("other purpose: %v", err)
	}
	other, _ := NewSecret()
	if _, err := box(t, other, PurposeFencePassword).Open(blob, "n1", "ipmi.password"); !errors.Is(err, ErrOpen) {
		t.Errorf("other secret: %v", err)
	}
	// Any flipped byte fails; so do truncation and garbage.
	// Flipped in the decoded bytes: a flip in the text's last character
	// may only touch base64's unused low bits, which decode the same.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(blob, Prefix))
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		tampered := bytes.Clone(raw)
		tampered[i] ^= 0x01
		if _, err := b.Open(Prefix+base64.RawURLEncoding.EncodeToString(tampered), "n1", "ipmi.password"); err == nil {
			t.Fatalf("tampered byte %d opened", i)
		}
	}
	for _, bad := range []string{"", "plain", Prefix, Prefix + "!!!", blob[:len(blob)-4]} {
		if got, err := b.Open(bad, "n1", "ipmi.password"); err == nil || got != nil {
			t.Errorf("Open(%q) = %q, %v", bad, got, err)
		}
	}
	// Errors never carry the value.
	if _, err := b.Open(blob, "n2"); strings.Contains(err.Error(), string(plain)) {
		t.Error("error leaks the plaintext")
	}
}

func TestNewRefusesBadSecret(t *testing.T) {
	for _, s := range [][]byte{nil, make([]byte, 16), make([]byte, 33)} {
		if _, err := New(s, PurposeFencePassword); err == nil {
			t.Errorf("New with %d-byte secret succeeded", len(s))
		}
	}
	if _, err := New(make([]byte, SecretSize), ""); err == nil {
		t.Error("New without purpose succeeded")
	}
}

func TestNewFrom(t *testing.T) {
	if _, err := NewFrom(nil, PurposeCloudInit); err == nil || !strings.Contains(err.Error(), "no cluster secret") {
		t.Errorf("nil loader: %v", err)
	}
	if _, err := NewFrom(func() ([]byte, error) { return nil, errors.New("unreadable") }, PurposeCloudInit); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("failing loader: %v", err)
	}
	secret := make([]byte, SecretSize)
	a, err := NewFrom(func() ([]byte, error) { return secret, nil }, PurposeCloudInit)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(secret, PurposeCloudInit)
	blob, _ := a.Seal([]byte("x"), "vm")
	if got, err := b.Open(blob, "vm"); err != nil || string(got) != "x" {
		t.Errorf("NewFrom's box and New's differ: %q %v", got, err)
	}
}
