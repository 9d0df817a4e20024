package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestCertWarnings(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(notAfter time.Time) []byte {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "n1"}, NotBefore: now.Add(-time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if w := certWarnings("cert", mk(now.Add(365*24*time.Hour)), now); len(w) != 0 {
		t.Errorf("a certificate valid for a year: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(10*24*time.Hour)), now); len(w) != 1 || !strings.Contains(w[0], "expires on 2026-01-11T00:00:00Z (in 10 days)") {
		t.Errorf("expiring in 10 days: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(-time.Hour)), now); len(w) != 1 || !strings.Contains(w[0], "expired on") {
		t.Errorf("expired: %v", w)
	}
	if w := certWarnings("cert", []byte("garbage"), now); len(w) != 1 || !strings.Contains(w[0], "cannot be read") {
		t.Errorf("garbage: %v", w)
	}
}
