package pki

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func testFingerprint() [32]byte {
	return sha256.Sum256([]byte("test CA"))
}

func mustJoinToken(t testing.TB) JoinToken {
	t.Helper()
	tok, err := NewJoinToken(testFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawJoinToken encodes an arbitrary payload, fixing the checksum, to build
// tokens that are well-formed except for one chosen defect.
func rawJoinToken(body []byte) string {
	b := binary.BigEndian.AppendUint32(bytes.Clone(body), crc32c(body))
	return JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func TestJoinTokenRoundTrip(t *testing.T) {
	tok := mustJoinToken(t)
	if tok.CAFingerprint != testFingerprint() {
		t.Error("fingerprint not kept")
	}
	if tok.ID == ([8]byte{}) || tok.Secret == ([24]byte{}) {
		t.Error("ID or secret is zero")
	}
	s := tok.String()
	if !regexp.MustCompile(`^tdmj1\.[A-Za-z0-9_-]{92}$`).MatchString(s) {
		t.Errorf("String() = %q has the wrong shape", s)
	}
	for _, in := range []string{s, "  " + s + "\n", "\t" + s + "\r\n"} {
		got, err := ParseJoinToken(in)
		if err != nil {
			t.Fatalf("ParseJoinToken(%q): %v", in, err)
		}
		if got != tok {
			t.Errorf("round trip: got %+v, want %+v", got, tok)
		}
	}
	if id := tok.IDString(); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("IDString() = %q", id)
	}
	if tok2 := mustJoinToken(t); tok2.ID == tok.ID || tok2.Secret == tok.Secret {
		t.Error("two tokens share an ID or secret")
	}
}

func TestJoinTokenVerifier(t *testing.T) {
	tok := mustJoinToken(t)
	want := sha256.Sum256(append(tok.ID[:], tok.Secret[:]...))
	if got := tok.Verifier(); got != want {
		t.Errorf("Verifier = %x, want %x", got, want)
	}
	if !ConstantTimeEqual(tok.Verifier(), want) {
		t.Error("ConstantTimeEqual(equal) = false")
	}
	other := tok
	other.Secret[0] ^= 1
	if ConstantTimeEqual(tok.Verifier(), other.Verifier()) {
		t.Error("different secrets give equal verifiers")
	}
}

func TestParseJoinTokenMalformed(t *testing.T) {
	tok := mustJoinToken(t)
	good := tok.String()
	body := good[len(JoinTokenPrefix):]
	admin, err := NewAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	v2 := append([]byte{2}, make([]byte, 8+24+32)...)

	cases := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\t", "empty"},
		{"wrong prefix", "tdmx1." + body, `must start with "tdmj1."`},
		{"upper-case prefix", "TDMJ1." + body, `must start with "tdmj1."`},
		{"future prefix", "tdmj2." + body, `must start with "tdmj1."`},
		{"no prefix", body, `must start with "tdmj1."`},
		{"admin token", admin, "this is an admin token, not a join token"},
		{"too short", good[:len(good)-1], "has 91 characters"},
		{"too long", good + "A", "has 93 characters"},
		{"prefix only", JoinTokenPrefix, "has 0 characters"},
		{"padding", good[:len(good)-1] + "=", "invalid character"},
		{"std base64", good[:len(good)-1] + "+", "invalid character"},
		{"inner newline", good[:50] + "\n" + good[51:], "invalid character"},
		{"inner space", good[:50] + " " + good[51:], "invalid character"},
		{"non-ASCII", good[:len(good)-2] + "é", "invalid character"},
		{"checksum", flip(good, 40), "checksum does not match"},
		{"checksum field", flip(good, len(good)-1), "checksum does not match"},
		{"unknown version", rawJoinToken(v2), "unknown join token version 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseJoinToken(c.in)
			wantMalformed(t, "ParseJoinToken", c.in, err, c.want)
			// Never echo the secret.
			if strings.Contains(err.Error(), body[10:40]) {
				t.Errorf("error %q leaks token contents", err)
			}
		})
	}
}

// wantMalformed checks that fn refused in with an
// ErrMalformedToken whose message contains want.
func wantMalformed(t *testing.T, fn, in string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s(%q) succeeded", fn, in)
	}
	if !errors.Is(err, ErrMalformedToken) {
		t.Errorf("error %v does not wrap ErrMalformedToken", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestAdminToken(t *testing.T) {
	s, err := NewAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^tdma1\.[A-Za-z0-9_-]{43}$`).MatchString(s) {
		t.Errorf("NewAdminToken() = %q has the wrong shape", s)
	}
	b, err := ParseAdminToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 32 || AdminTokenPrefix+base64.RawURLEncoding.EncodeToString(b) != s {
		t.Errorf("ParseAdminToken round trip failed: %x", b)
	}
	v, err := AdminTokenVerifier(s)
	if err != nil || v != sha256.Sum256(b) {
		t.Errorf("AdminTokenVerifier = %x, %v", v, err)
	}
	s2, _ := NewAdminToken()
	v2, _ := AdminTokenVerifier(s2)
	if s2 == s || ConstantTimeEqual(v, v2) {
		t.Error("two admin tokens are equal")
	}
	if _, err := AdminTokenVerifier("nope"); !errors.Is(err, ErrMalformedToken) {
		t.Errorf("AdminTokenVerifier(bad) err = %v", err)
	}
}

func TestParseAdminTokenMalformed(t *testing.T) {
	good, _ := NewAdminToken()
	join := mustJoinToken(t).String()
	// 43 characters encode 32 bytes plus 2 spare bits; set them to make a
	// non-canonical encoding.
	var zero [32]byte
	canon := AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(zero[:]) // ends in 'A'
	nonCanon := canon[:len(canon)-1] + "B"

	cases := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"wrong prefix", "tdmb1." + good[6:], `must start with "tdma1."`},
		{"bearer scheme", "Bearer " + good, `must start with "tdma1."`},
		{"join token", join, "this is a join token, not an admin token"},
		{"too short", good[:len(good)-1], "has 42 characters"},
		{"too long", good + "A", "has 44 characters"},
		{"padding", good + "=", "has 44 characters"},
		{"bad char", good[:10] + "." + good[11:], "invalid character"},
		{"non-canonical", nonCanon, "not valid base64url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseAdminToken(c.in)
			wantMalformed(t, "ParseAdminToken", c.in, err, c.want)
		})
	}
	if _, err := ParseAdminToken(canon); err != nil {
		t.Errorf("canonical all-zero token rejected: %v", err)
	}
}
