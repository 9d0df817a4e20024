package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority for TLS tests, built with
// crypto/x509 only (the data path must not import internal/pki).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// testCert is a leaf certificate and its key.
type testCert struct {
	tls             tls.Certificate
	certPEM, keyPEM []byte
}

// serial is random, so certificates from different CAs never collide.
func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// certTemplate is what every test certificate shares: a random serial,
// the subject, and a validity window around now.
func certTemplate(t testing.TB, subject pkix.Name) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               subject,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// sign creates the certificate tmpl for key, signed by parent's signer.
func sign(t testing.TB, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) []byte {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := certTemplate(t, pkix.Name{CommonName: cn})
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der := sign(t, tmpl, tmpl, key, key)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a leaf: a server certificate for localhost and 127.0.0.1,
// or a client certificate whose OrganizationalUnit lists the exports it
// may open (the test Authorize reads it). KeyEncipherment is set because
// QEMU refuses a leaf whose critical key usage lacks it.
func (ca *testCA) issue(t testing.TB, cn string, server bool, exports ...string) *testCert {
	t.Helper()
	key := newKey(t)
	tmpl := certTemplate(t, pkix.Name{CommonName: cn, OrganizationalUnit: exports})
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	parent, signer := ca.cert, ca.key
	if ca.cert == nil { // self-signed
		parent, signer = tmpl, key
	}
	der := sign(t, tmpl, parent, key, signer)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// selfSigned is a client certificate no CA vouches for.
func selfSigned(t testing.TB, cn string, exports ...string) *testCert {
	return (&testCA{}).issue(t, cn, false, exports...)
}

// serverTLS is what the daemon will pass to WithTLS: the node's
// certificate, and client certificates required and verified against ca.
func serverTLS(ca *testCA, cert *testCert) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert.tls},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// clientTLS trusts ca for the server and presents cert (none if nil),
// even when the server does not name its issuer as acceptable: crypto/tls
// would otherwise quietly send no certificate, and the server's
// verification would go untested.
func clientTLS(ca *testCA, cert *testCert) *tls.Config {
	c := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.tls, nil }
	}
	return c
}

// ouAuthorize allows the exports listed in the client certificate's
// OrganizationalUnit, as a per-consumer export certificate would.
func ouAuthorize(_ context.Context, st tls.ConnectionState, name string) error {
	if len(st.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	if !slices.Contains(st.PeerCertificates[0].Subject.OrganizationalUnit, name) {
		return errors.New("certificate does not cover this export")
	}
	return nil
}

// writeClientDir writes the files QEMU's tls-creds-x509 (endpoint=client)
// and libnbd's tls-certificates expect.
// Extra CAs are appended to ca-cert.pem: QEMU checks its own certificate
// against that file, so a client certificate from a CA the server does not
// trust needs its issuer there to be sent at all.
func writeClientDir(t testing.TB, ca *testCA, cert *testCert, extraCAs ...*testCA) string {
	t.Helper()
	dir := t.TempDir()
	caPEM := slices.Clone(ca.pem)
	for _, x := range extraCAs {
		caPEM = append(caPEM, x.pem...)
	}
	for name, b := range map[string][]byte{
		"ca-cert.pem":     caPEM,
		"client-cert.pem": cert.certPEM,
		"client-key.pem":  cert.keyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
