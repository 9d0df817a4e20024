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
	"slices"
)

// NewKey generates an ECDSA P-256 private key and returns it as PKCS#8 PEM.
func NewKey() (keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating key: %w", err)
	}
	return marshalKeyPEM(key)
}

// NewCSR creates a PEM certificate signing request for the key in keyPEM.
// The common name is informational only: the CA decides the identity.
func NewCSR(keyPEM []byte, commonName string) (csrPEM []byte, err error) {
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: creating CSR: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: creating CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CertFingerprint returns the SHA-256 of the DER encoding of the first
// certificate in certPEM. For the CA certificate it equals CA.Fingerprint.
func CertFingerprint(certPEM []byte) ([32]byte, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return [32]byte{}, fmt.Errorf("pki: fingerprint: %w", err)
	}
	return sha256.Sum256(cert.Raw), nil
}

func marshalKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// nextPEM returns the first PEM block of data whose type is one of types,
// skipping others, and the data after it; a nil block if there is none.
func nextPEM(data []byte, types ...string) (*pem.Block, []byte) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil || slices.Contains(types, block.Type) {
			return block, data
		}
	}
}

// parseFirstPEM returns the first block of type typ in data, parsed by
// parse; what names the content in errors.
func parseFirstPEM[T any](data []byte, typ, what string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	block, _ := nextPEM(data, typ)
	if block == nil {
		return zero, fmt.Errorf("no PEM %s block found", typ)
	}
	v, err := parse(block.Bytes)
	if err != nil {
		return zero, fmt.Errorf("parsing %s: %w", what, err)
	}
	return v, nil
}

// parseCertPEM returns the first CERTIFICATE block of data, parsed.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	return parseFirstPEM(data, "CERTIFICATE", "certificate", x509.ParseCertificate)
}

// parseCertsPEM returns every CERTIFICATE block of data, parsed.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = nextPEM(data, "CERTIFICATE")
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// parseKeyPEM returns the ECDSA private key in data. It accepts PKCS#8
// ("PRIVATE KEY") and SEC 1 ("EC PRIVATE KEY", as written by openssl) and
// skips other blocks such as "EC PARAMETERS".
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := nextPEM(data, "PRIVATE KEY", "EC PRIVATE KEY")
	if block == nil {
		return nil, errors.New("no PEM private key block found")
	}
	if block.Type == "EC PRIVATE KEY" {
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ECDSA", k)
	}
	return ek, nil
}

func parseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	csr, err := parseFirstPEM(data, "CERTIFICATE REQUEST", "CSR", x509.ParseCertificateRequest)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	// Proves the requester holds the private key.
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: CSR signature is invalid: %w", err)
	}
	return csr, nil
}
