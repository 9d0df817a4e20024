package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Organizational units that mark what a certificate is for. Servers use
// them (through PeerIdentity) to decide what a peer may call.
const (
	OUNode  = "node"
	OUAdmin = "admin"
)

// Validity periods.
const (
	CAValidity    = 10 * 365 * 24 * time.Hour
	NodeValidity  = 5 * 365 * 24 * time.Hour
	AdminValidity = 5 * 365 * 24 * time.Hour

	// clockSkew backdates NotBefore so that a certificate issued by a node
	// whose clock is slightly ahead is not "not yet valid" on its peers.
	clockSkew = 5 * time.Minute
)

// maxNameLen is the X.509 upper bound for a common name (ub-common-name).
const maxNameLen = 64

// CA is the cluster certificate authority: a self-signed certificate and its
// private key.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA for the named cluster, valid for 10 years
// from now. It may only sign leaf certificates (path length 0).
func NewCA(clusterName string, now time.Time) (*CA, error) {
	if clusterName == "" {
		return nil, errors.New("pki: cluster name is empty")
	}
	cn := "tandem CA " + clusterName
	if len(cn) > maxNameLen {
		return nil, fmt.Errorf("pki: cluster name %q is too long (at most %d characters)", clusterName, maxNameLen-len("tandem CA "))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing new CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA loads a CA from its PEM certificate and PEM private key (PKCS#8 or
// SEC 1). It checks that the certificate is a CA and that the key matches.
//
// certPEM may hold several CA certificates (both CAs during a rotation);
// the one the key belongs to is the CA that signs.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: loading CA certificate: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: loading CA key: %w", err)
	}
	for _, cert := range certs {
		if !key.PublicKey.Equal(cert.PublicKey) {
			continue
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return nil, errors.New("pki: loading CA: certificate is not a CA certificate")
		}
		return &CA{cert: cert, key: key}, nil
	}
	return nil, errors.New("pki: loading CA: private key does not match the certificate")
}

// CAFingerprint is the SHA-256 fingerprint of a PEM CA certificate, as
// CA.Fingerprint gives it.
func CAFingerprint(certPEM []byte) ([32]byte, error) {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(c.Raw), nil
}

// SelectCA returns, from a bundle of PEM CA certificates, the one whose
// fingerprint is fp, PEM encoded.
func SelectCA(bundle []byte, fp [32]byte) ([]byte, error) {
	certs, err := parseCertsPEM(bundle)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if sha256.Sum256(c.Raw) == fp {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), nil
		}
	}
	return nil, errors.New("pki: no CA certificate with that fingerprint in the bundle")
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// KeyPEM returns the CA private key as a PKCS#8 PEM block. Handle with care.
func (ca *CA) KeyPEM() ([]byte, error) {
	return marshalKeyPEM(ca.key)
}

// Fingerprint returns the SHA-256 of the CA certificate's DER encoding. It is
// what join tokens carry so that a joining node can authenticate the cluster.
func (ca *CA) Fingerprint() [32]byte {
	return sha256.Sum256(ca.cert.Raw)
}

// SignNode issues a node certificate for the public key in csrPEM. The
// identity comes from the arguments, not the CSR: the caller has already
// decided (from the join token) which node this is, and the CSR's requested
// subject and SANs are ignored. The certificate has CN and DNS SAN nodeName,
// OU "node", the given IP SANs, EKU ServerAuth+ClientAuth (nodes are both
// servers and clients of each other, and of each other's libvirtd) and is valid for 5 years, but never
// past the CA's own expiry.
func (ca *CA) SignNode(csrPEM []byte, nodeName string, ips []net.IP, now time.Time) ([]byte, error) {
	return ca.SignNodeFor(csrPEM, nodeName, ips, now, NodeValidity)
}

// SignNodeFor is SignNode with the certificate's lifetime, the cluster's
// pki.cert_lifetime setting (short ones let tests watch renewal).
func (ca *CA) SignNodeFor(csrPEM []byte, nodeName string, ips []net.IP, now time.Time, validity time.Duration) ([]byte, error) {
	if err := checkNodeName(nodeName); err != nil {
		return nil, err
	}
	csr, err := parseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("pki: CSR key is not an ECDSA P-256 key")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: nodeName, OrganizationalUnit: []string{OUNode}},
		DNSNames:    []string{nodeName},
		IPAddresses: ips,
		// KeyEncipherment means nothing for an ECDSA key, but libvirtd
		// refuses a server certificate whose (critical) key usage lacks
		// it, and node certificates are libvirtd's too.
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.issue(tmpl, pub, now, validity)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// IssueAdmin issues a client certificate (OU "admin", EKU ClientAuth only, so
// it can never act as a server) together with a fresh private key, for the
// CLI. name becomes the CN and is meant for audit logs.
func (ca *CA) IssueAdmin(name string, now time.Time) (certPEM, keyPEM []byte, err error) {
	return ca.IssueAdminFor(name, now, AdminValidity)
}

// IssueAdminFor is IssueAdmin with the certificate's lifetime.
func (ca *CA) IssueAdminFor(name string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if name == "" || len(name) > maxNameLen {
		return nil, nil, fmt.Errorf("pki: admin name must be 1 to %d characters", maxNameLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return nil, nil, errors.New("pki: admin name contains control characters")
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generating admin key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{OUAdmin}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.issue(tmpl, &key.PublicKey, now, validity)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// issue fills in serial and validity and signs tmpl with the CA key.
func (ca *CA) issue(tmpl *x509.Certificate, pub *ecdsa.PublicKey, now time.Time, validity time.Duration) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		// A leaf outliving its CA would be unusable anyway; say so honestly.
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// randomSerial returns a random, positive, non-zero 128-bit serial number.
// Random serials avoid having to keep a replicated counter and are what
// RFC 5280 / CA/B practice expect.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("pki: generating serial number: %w", err)
		}
		if s := new(big.Int).SetBytes(b[:]); s.Sign() > 0 {
			return s, nil
		}
	}
}

// checkNodeName enforces the node-name syntax (the same rule as tandemd's
// node_name setting: [a-z0-9][a-z0-9-]{0,62}), since the name becomes a DNS
// SAN.
func checkNodeName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("pki: node name %q must be 1 to 63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return fmt.Errorf("pki: node name %q must match [a-z0-9][a-z0-9-]{0,62}", name)
		}
	}
	return nil
}

// RenewAt is when a leaf certificate is due for renewal: two thirds into its
// lifetime, counted from its issue (NotBefore is backdated by clockSkew, which
// would otherwise make a short-lived certificate due at once).
func RenewAt(certPEM []byte) (renewAt, notAfter time.Time, err error) {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	issued := c.NotBefore.Add(clockSkew)
	if !issued.Before(c.NotAfter) {
		issued = c.NotBefore
	}
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3), c.NotAfter, nil
}
