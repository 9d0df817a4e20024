package pki

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParseJoinToken(f *testing.F) {
	tok, err := NewJoinToken(testFingerprint())
	if err != nil {
		f.Fatal(err)
	}
	good := tok.String()
	f.Add(good)
	f.Add(" " + good + "\n")
	f.Add(good[:len(good)-1])
	f.Add(good + "=")
	f.Add("tdmj1.")
	f.Add("")
	f.Add("tdma1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(rawJoinToken(make([]byte, 65)))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseJoinToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v does not wrap ErrMalformedToken", err)
			}
			return
		}
		// Exactly one text form per token.
		if got, want := tok.String(), strings.TrimSpace(s); got != want {
			t.Fatalf("String() = %q, want the parsed input %q", got, want)
		}
		again, err := ParseJoinToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("re-parse: %+v, %v; want %+v", again, err, tok)
		}
	})
}

func FuzzParseAdminToken(f *testing.F) {
	good, err := NewAdminToken()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("\t" + good + "\r\n")
	f.Add(good[:len(good)-1] + "B")
	f.Add(good + "=")
	f.Add("tdma1.")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseAdminToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v does not wrap ErrMalformedToken", err)
			}
			if _, verr := AdminTokenVerifier(s); verr == nil {
				t.Fatal("AdminTokenVerifier accepted what ParseAdminToken refused")
			}
			return
		}
		if len(b) != adminSecretLen {
			t.Fatalf("got %d bytes, want %d", len(b), adminSecretLen)
		}
		if got, want := AdminTokenPrefix+tokenEncoding().EncodeToString(b), strings.TrimSpace(s); got != want {
			t.Fatalf("re-encoded %q, want the parsed input %q", got, want)
		}
		if _, err := AdminTokenVerifier(s); err != nil {
			t.Fatalf("AdminTokenVerifier refused what ParseAdminToken accepted: %v", err)
		}
	})
}
