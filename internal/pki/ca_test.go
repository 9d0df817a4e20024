package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, time.Now())
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func mustParseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("parse cert: %v", err)
	}
	return c
}

// mustNode returns a node certificate and key signed by ca.
func mustNode(t *testing.T, ca *CA, name string, now time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, err := NewKey()
	if err != nil {
		t.Fatalf("NewKey: %v", err)
	}
	csr, err := NewCSR(keyPEM, name)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	certPEM, err = ca.SignNode(csr, name, []net.IP{net.ParseIP("127.0.0.1")}, now)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	return certPEM, keyPEM
}

func TestNewCA(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca, err := NewCA("prod", now)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, ca.CertPEM())
	if got, want := c.Subject.CommonName, "tandem CA prod"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints wrong: IsCA=%v BCV=%v MaxPathLen=%d", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("KeyUsage %v lacks CertSign", c.KeyUsage)
	}
	if !c.NotAfter.Equal(now.Add(CAValidity)) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, now.Add(CAValidity))
	}
	if c.NotBefore.After(now) {
		t.Errorf("NotBefore %v is after now", c.NotBefore)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if ca.Fingerprint() != sha256.Sum256(c.Raw) {
		t.Error("Fingerprint is not sha256 of the DER")
	}
	fp, err := CertFingerprint(ca.CertPEM())
	if err != nil || fp != ca.Fingerprint() {
		t.Errorf("CertFingerprint = %x, %v; want %x", fp, err, ca.Fingerprint())
	}

	if _, err := NewCA("", now); err == nil {
		t.Error("NewCA with empty name succeeded")
	}
	if _, err := NewCA(strings.Repeat("x", 60), now); err == nil {
		t.Error("NewCA with overlong name succeeded")
	}
}

func TestLoadCA(t *testing.T) {
	ca := mustCA(t, "c1")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Error("loaded CA has a different fingerprint")
	}
	// The loaded CA can sign, and what it signs verifies against the original.
	certPEM, _ := mustNode(t, loaded, "n1", time.Now())
	roots := x509.NewCertPool()
	roots.AddCert(mustParseCert(t, ca.CertPEM()))
	if _, err := mustParseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("cert from loaded CA does not verify: %v", err)
	}

	// SEC 1 ("EC PRIVATE KEY", as openssl writes) is accepted too.
	sec1, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	if _, err := LoadCA(ca.CertPEM(), append([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"), sec1PEM...)); err != nil {
		t.Errorf("LoadCA with SEC 1 key: %v", err)
	}

	other := mustCA(t, "c2")
	otherKey, _ := other.KeyPEM()
	if _, err := LoadCA(ca.CertPEM(), otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("LoadCA with mismatched key: err = %v", err)
	}
	nodeCert, nodeKey := mustNode(t, ca, "n1", time.Now())
	if _, err := LoadCA(nodeCert, nodeKey); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("LoadCA with a leaf: err = %v", err)
	}
	if _, err := LoadCA([]byte("garbage"), keyPEM); err == nil {
		t.Error("LoadCA with garbage cert succeeded")
	}
	if _, err := LoadCA(ca.CertPEM(), []byte("garbage")); err == nil {
		t.Error("LoadCA with garbage key succeeded")
	}
}

func TestSignNode(t *testing.T) {
	ca := mustCA(t, "c1")
	now := time.Now().Truncate(time.Second)
	keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for another name; the CA must ignore it.
	csr, err := NewCSR(keyPEM, "evil")
	if err != nil {
		t.Fatal(err)
	}
	ips := []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("fd00::7")}
	certPEM, err := ca.SignNode(csr, "node-7", ips, now)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	if c.Subject.CommonName != "node-7" || !slices.Equal(c.Subject.OrganizationalUnit, []string{OUNode}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if !slices.Equal(c.DNSNames, []string{"node-7"}) {
		t.Errorf("DNSNames = %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(ips[0]) || !c.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("IPAddresses = %v", c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
	}
	// libvirtd insists on both for its server certificate.
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; c.KeyUsage&want != want {
		t.Errorf("KeyUsage = %v, want DigitalSignature and KeyEncipherment", c.KeyUsage)
	}
	if c.IsCA {
		t.Error("node cert is a CA")
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v not a positive 128-bit number", c.SerialNumber)
	}
	if !c.NotAfter.Equal(now.Add(NodeValidity)) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, now.Add(NodeValidity))
	}
	if err := c.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("not signed by CA: %v", err)
	}
	// The certificate is for the CSR's key.
	key, _ := parseKeyPEM(keyPEM)
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Error("certificate public key is not the CSR's")
	}

	// Two certs get different serials.
	certPEM2, err := ca.SignNode(csr, "node-7", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if mustParseCert(t, certPEM2).SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}

	// Never outlives the CA.
	late, err := ca.SignNode(csr, "node-7", nil, ca.cert.NotAfter.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustParseCert(t, late).NotAfter; !got.Equal(ca.cert.NotAfter) {
		t.Errorf("late cert NotAfter = %v, want CA's %v", got, ca.cert.NotAfter)
	}
}

func TestSignNodeRejects(t *testing.T) {
	ca := mustCA(t, "c1")
	keyPEM, _ := NewKey()
	csr, _ := NewCSR(keyPEM, "n")
	for _, name := range []string{"", "Node", "-a", "a_b", "a.b", strings.Repeat("a", 64)} {
		if _, err := ca.SignNode(csr, name, nil, time.Now()); err == nil {
			t.Errorf("SignNode(name %q) succeeded", name)
		}
	}
	if _, err := ca.SignNode([]byte("nope"), "n", nil, time.Now()); err == nil {
		t.Error("SignNode with garbage CSR succeeded")
	}

	// A CSR whose signature does not match (proof of possession fails).
	block, _ := pem.Decode(csr)
	der := slices.Clone(block.Bytes)
	der[len(der)-3] ^= 0xff
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if _, err := ca.SignNode(bad, "n", nil, time.Now()); err == nil {
		t.Error("SignNode with a tampered CSR succeeded")
	}

	// Only P-256.
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}}, k384)
	csr384 := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der384})
	if _, err := ca.SignNode(csr384, "n", nil, time.Now()); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("SignNode with P-384 CSR: err = %v", err)
	}
}

func TestIssueAdmin(t *testing.T) {
	ca := mustCA(t, "c1")
	certPEM, keyPEM, err := ca.IssueAdmin("alice", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{OUAdmin}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v, want ClientAuth only", c.ExtKeyUsage)
	}
	if len(c.DNSNames) != 0 || len(c.IPAddresses) != 0 {
		t.Errorf("admin cert has SANs: %v %v", c.DNSNames, c.IPAddresses)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil || !key.PublicKey.Equal(c.PublicKey) {
		t.Errorf("admin key does not match cert (err %v)", err)
	}
	for _, name := range []string{"", strings.Repeat("a", 65), "bad\nname"} {
		if _, _, err := ca.IssueAdmin(name, time.Now()); err == nil {
			t.Errorf("IssueAdmin(%q) succeeded", name)
		}
	}
}

func TestCertFingerprintErrors(t *testing.T) {
	if _, err := CertFingerprint(nil); err == nil {
		t.Error("CertFingerprint(nil) succeeded")
	}
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	if _, err := CertFingerprint(bad); err == nil {
		t.Error("CertFingerprint(bad DER) succeeded")
	}
}

func TestNewCSRBadKey(t *testing.T) {
	if _, err := NewCSR([]byte("nope"), "n"); err == nil {
		t.Error("NewCSR with garbage key succeeded")
	}
}
