package adminclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// remoteTLS builds the mTLS client config from a credentials dir.
func remoteTLS(dir string) (*tls.Config, error) {
	caPath := filepath.Join(dir, CAFile)
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	// Check all three first so the error names the file that is missing
	// rather than whatever tls.LoadX509KeyPair reports.
	for _, p := range []string{caPath, certPath, keyPath} {
		if _, err := os.Stat(p); err != nil {
			return nil, credentialError(p, err)
		}
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, credentialError(caPath, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("admin credentials: %s holds no PEM certificate", caPath)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("admin credentials: load %s / %s: %w", certPath, keyPath, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		// Admins dial nodes by IP, and node certificates are issued by the
		// cluster's own CA, which is the only thing we trust. The standard
		// verifier would also demand that the address appear in the
		// certificate's SANs, so it is switched off and VerifyConnection
		// checks the chain against the cluster CA instead. This is not
		// "skip verification": a peer without a certificate from this CA
		// fails the handshake.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyChain(pool),
	}, nil
}

// verifyChain verifies the server's chain against pool, ignoring the host name.
func verifyChain(pool *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("server certificate not issued by the cluster CA: %w", err)
		}
		return nil
	}
}
