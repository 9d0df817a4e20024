package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLS returns the configuration for a tandemd gRPC server (node-to-node
// and admin). The server presents certPEM/keyPEM followed by the CA
// certificate it chains to: a joining node has no CA yet and authenticates
// the cluster by the CA's fingerprint (see PinnedTLS), so it needs to see the
// CA certificate itself.
//
// Client certificates are requested and, if sent, must chain to caPEM with
// the ClientAuth usage; but they are optional because a joining node has
// none yet. Callers must therefore enforce per method who may call, using
// PeerIdentity.
//
// The server certificate is checked against the CA here, so a wrong or
// expired certificate is reported at start-up rather than as failed
// handshakes later.
func ServerTLS(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	roots, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: loading certificate and key: %w", err)
	}
	chains, err := verifyChain(roots, pair.Certificate, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: own certificate does not verify against the CA: %w", err)
	}
	root := chains[0][len(chains[0])-1]
	if !bytes.Equal(pair.Certificate[len(pair.Certificate)-1], root.Raw) {
		pair.Certificate = append(pair.Certificate, root.Raw)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
	}, nil
}

// ClientTLS returns the configuration for dialing a tandemd server. certPEM
// and keyPEM are the client's certificate and key, or both nil to dial
// without a client certificate.
//
// The server certificate must chain to caPEM with the ServerAuth usage, but
// its host name is not checked: nodes are dialled by IP address and node
// names can change, so the name in the certificate says nothing useful about
// the address we dialled. Any certificate issued by the cluster CA is a
// cluster member, which is the property we need. The standard library has
// no switch for "verify the chain but not the name", so this sets
// InsecureSkipVerify (which disables all of its checks) and does the full
// chain verification itself in VerifyConnection, which runs on every
// handshake, including resumed ones.
//
// A consequence: on the client side the standard library leaves
// ConnectionState.VerifiedChains empty, so PeerIdentity reports nothing for
// connections made with this configuration.
func ClientTLS(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	roots, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: client TLS: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		// See the function comment: verification is done in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := verifyPeer(roots, cs.PeerCertificates, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("pki: server certificate: %w", err)
			}
			return nil
		},
	}
	switch {
	case certPEM == nil && keyPEM == nil:
	case certPEM == nil || keyPEM == nil:
		return nil, errors.New("pki: client TLS: a client certificate needs both a certificate and a key")
	default:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("pki: client TLS: loading certificate and key: %w", err)
		}
		if _, err := verifyChain(roots, pair.Certificate, x509.ExtKeyUsageClientAuth); err != nil {
			return nil, fmt.Errorf("pki: client TLS: own certificate does not verify against the CA: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// PinnedTLS returns the configuration a joining node uses to dial the cluster
// before it has the CA certificate. The server must send its CA certificate
// in its chain (ServerTLS does); the server is accepted only if a certificate
// in the chain hashes to caFingerprint, is a CA, and the server's leaf
// verifies against it with the ServerAuth usage. This is the same idea as
// kubeadm's discovery-token CA cert hash. No client certificate is sent; the
// join token authenticates the node to the cluster.
//
// As with ClientTLS, host names are not checked and PeerIdentity reports
// nothing on connections made with this configuration.
func PinnedTLS(caFingerprint [32]byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verification is done in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			certs := cs.PeerCertificates
			if len(certs) < 2 {
				return errors.New("pki: server did not send its CA certificate, so it cannot be matched against the join token")
			}
			var root *x509.Certificate
			for _, c := range certs[1:] {
				if sha256.Sum256(c.Raw) == caFingerprint {
					root = c
					break
				}
			}
			if root == nil {
				return errors.New("pki: server's CA does not match the CA fingerprint in the join token (wrong cluster, or someone in the middle)")
			}
			if !root.IsCA || !root.BasicConstraintsValid {
				return errors.New("pki: certificate matching the CA fingerprint is not a CA certificate")
			}
			roots := x509.NewCertPool()
			roots.AddCert(root)
			if _, err := verifyPeer(roots, certs, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("pki: server certificate: %w", err)
			}
			return nil
		},
	}
}

// PeerIdentity returns the common name and first organizational unit (OU
// "node" or "admin") of the peer's certificate, taken from the verified chain
// only. ok is false if the peer sent no certificate, or if the chain was not
// verified by the standard library (as on connections made with ClientTLS or
// PinnedTLS, whose verification happens in VerifyConnection); an unverified
// certificate is never trusted.
func PeerIdentity(state tls.ConnectionState) (name string, ou string, ok bool) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", "", false
	}
	leaf := state.VerifiedChains[0][0]
	if leaf.Subject.CommonName == "" || len(leaf.Subject.OrganizationalUnit) == 0 {
		return "", "", false
	}
	return leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit[0], true
}

// caPool parses every certificate in caPEM into a pool. More than one is
// allowed so that a CA can be rotated by trusting old and new for a while.
func caPool(caPEM []byte) (*x509.CertPool, error) {
	certs, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("CA certificate %q is not a CA certificate", c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// verifyChain verifies a DER chain (leaf first) as presented in a
// tls.Certificate.
func verifyChain(roots *x509.CertPool, der [][]byte, usage x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(der))
	for _, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certs = append(certs, c)
	}
	return verifyPeer(roots, certs, usage)
}

// verifyPeer verifies certs[0] against roots, using the rest of certs as
// intermediates, for the given extended key usage and the current time. No
// host name is checked.
func verifyPeer(roots *x509.CertPool, certs []*x509.Certificate, usage x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	return certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
}

// CertCheck is a check of the peer's certificate beyond its chain, such as
// the cluster's revocation list. It sees the leaf only after the chain was
// verified.
type CertCheck func(leaf *x509.Certificate) error

// WithCertCheck returns a copy of cfg that also runs check on every
// handshake, resumed ones included, in which the peer presented a
// certificate, so a revoked certificate fails the handshake itself rather
// than a later call. Handshakes without a peer certificate are left to
// cfg's own rules (a joining node has none).
func WithCertCheck(cfg *tls.Config, check CertCheck) *tls.Config {
	c := cfg.Clone()
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		if err := check(cs.PeerCertificates[0]); err != nil {
			return fmt.Errorf("pki: peer certificate refused: %w", err)
		}
		return nil
	}
	return c
}

// SerialHex is how the cluster names a certificate's serial number: lower
// case hex without leading zeros, as the revocation list stores it.
func SerialHex(cert *x509.Certificate) string { return fmt.Sprintf("%x", cert.SerialNumber) }

// CertSerial returns SerialHex of the first certificate in certPEM.
func CertSerial(certPEM []byte) (string, error) {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return "", err
	}
	return SerialHex(c), nil
}

// CertOU returns the first organisational unit of cert ("node", "admin"),
// or "" if it has none.
func CertOU(cert *x509.Certificate) string {
	if len(cert.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	return cert.Subject.OrganizationalUnit[0]
}
