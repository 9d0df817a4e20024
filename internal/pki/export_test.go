package pki

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSignExport(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "prod")
	keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(keyPEM, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignExport(csr, "backup-host", []string{"db", "web", "db"}, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	if c.Subject.CommonName != "backup-host" || !slices.Equal(c.Subject.OrganizationalUnit, []string{OUExport}) {
		t.Fatalf("subject %v", c.Subject)
	}
	if got := ExportVolumes(c); !slices.Equal(got, []string{"db", "web"}) {
		t.Fatalf("volumes %v", got)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Fatalf("usage %v %v", c.ExtKeyUsage, c.KeyUsage)
	}
	if d := c.NotAfter.Sub(now); d > 24*time.Hour || d < 23*time.Hour {
		t.Fatalf("validity %s", d)
	}
	// It is a client certificate of the cluster, never a server.
	pair := [][]byte{c.Raw}
	roots, _ := caPool(ca.CertPEM())
	if _, err := verifyChain(roots, pair, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("does not verify as a client: %v", err)
	}
	if _, err := verifyChain(roots, pair, x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("verifies as a server")
	}

	for _, tc := range []struct {
		name    string
		vols    []string
		days    time.Duration
		wantErr string
	}{
		{"", []string{"a"}, time.Hour, "name must be"},
		{"x", nil, time.Hour, "1 to 256 volumes"},
		{"x", []string{"a/b"}, time.Hour, "not a volume name"},
		{"x", []string{"a"}, 0, "validity"},
	} {
		if _, err := ca.SignExport(csr, tc.name, tc.vols, now, tc.days); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("SignExport(%q, %v, %s): %v, want %q", tc.name, tc.vols, tc.days, err, tc.wantErr)
		}
	}
}
