package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// OUExport marks an export certificate: a client of the TCP NBD export
// that may open only the volumes named in its URI SANs.
const OUExport = "export"

// ExportVolumeScheme is the URI SAN scheme naming a volume an export
// certificate may open: "tandem-volume:NAME".
const ExportVolumeScheme = "tandem-volume"

// ExportValidity is an export certificate's default lifetime.
const ExportValidity = 365 * 24 * time.Hour

// maxExportVolumes bounds the volumes one export certificate names.
const maxExportVolumes = 256

// SignExport issues an export certificate for the public key in csrPEM:
// CN name (the consumer, for audit and listing), OU "export", one URI SAN
// tandem-volume:V per volume, EKU ClientAuth only, valid for validity
// (never past the CA). As with SignNode the CSR's subject and SANs are
// ignored. KeyEncipherment is set next to DigitalSignature because QEMU's
// tls-creds-x509 refuses a client certificate whose key usage lacks it.
func (ca *CA) SignExport(csrPEM []byte, name string, volumes []string, now time.Time, validity time.Duration) ([]byte, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("pki: export certificate name must be 1 to %d characters", maxNameLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return nil, errors.New("pki: export certificate name contains control characters")
		}
	}
	if len(volumes) == 0 || len(volumes) > maxExportVolumes {
		return nil, fmt.Errorf("pki: an export certificate names 1 to %d volumes", maxExportVolumes)
	}
	if validity <= 0 {
		return nil, errors.New("pki: export certificate validity must be positive")
	}
	csr, err := parseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("pki: CSR key is not an ECDSA P-256 key")
	}
	uris := make([]*url.URL, 0, len(volumes))
	for _, v := range volumes {
		if v == "" || strings.ContainsAny(v, ":/?#%") {
			return nil, fmt.Errorf("pki: %q is not a volume name", v)
		}
		uris = append(uris, &url.URL{Scheme: ExportVolumeScheme, Opaque: v})
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{OUExport}},
		URIs:        uris,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.issue(tmpl, pub, now, validity)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ExportVolumes lists the volumes an export certificate may open, from
// its URI SANs; callers check its OU (PeerIdentity) and chain first.
func ExportVolumes(cert *x509.Certificate) []string {
	var out []string
	for _, u := range cert.URIs {
		if u.Scheme == ExportVolumeScheme && u.Opaque != "" && !slices.Contains(out, u.Opaque) {
			out = append(out, u.Opaque)
		}
	}
	return out
}

// ParseCert parses the first certificate of a PEM block, for callers that
// report on certificates they issued (serial, expiry).
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return c, nil
}
