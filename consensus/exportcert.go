package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// ExportCertRecord is an export certificate the cluster CA issued: a
// client of the TCP NBD export that may open only Volumes. The cluster
// keeps it so that operators can list (and revoke) what was handed out;
// the certificate itself carries the volumes, so the NBD handshake needs
// no lookup here.
type ExportCertRecord struct {
	// Name is the consumer (the certificate's CN), unique in the cluster.
	Name string `json:"name"`
	// Serial is the certificate's serial number in hex.
	Serial   string    `json:"serial"`
	Volumes  []string  `json:"volumes"`
	NotAfter time.Time `json:"not_after"`
	// IssuedBy is the admin credential that asked for it; IssuedOn the
	// node that signed it (Command.By).
	IssuedBy string    `json:"issued_by"`
	IssuedOn string    `json:"issued_on"`
	IssuedAt time.Time `json:"issued_at"`
}

const opExportCertAdd = "export-cert-add"

// applyExportCert records an issued export certificate. A retried
// proposal (same name and serial) answers the stored record; another
// certificate of a taken name is refused.
func (m *metaSM) applyExportCert(c *Command) ([]byte, error) {
	s := m.s
	r := c.ExportCert
	if r == nil || r.Name == "" || r.Serial == "" || len(r.Volumes) == 0 {
		return nil, fmt.Errorf("%w: export-cert-add needs a name, a serial and volumes", ErrBadCommand)
	}
	if s.ExportCerts == nil {
		s.ExportCerts = map[string]*ExportCertRecord{}
	}
	if old, ok := s.ExportCerts[r.Name]; ok {
		if old.Serial == r.Serial {
			return json.Marshal(old)
		}
		return nil, fmt.Errorf("%w: an export certificate named %s exists (serial %s)", ErrBadCommand, r.Name, old.Serial)
	}
	rec := *r
	rec.IssuedOn, rec.IssuedAt = c.By, c.At
	s.ExportCerts[rec.Name] = &rec
	m.audit(c, "export-cert-issue", fmt.Sprintf("export certificate %s (serial %s) for %s, by %s, expires %s",
		rec.Name, rec.Serial, strings.Join(rec.Volumes, ","), rec.IssuedBy, rec.NotAfter.UTC().Format(time.RFC3339)))
	return json.Marshal(&rec)
}

// AddExportCert records an export certificate the CA just signed.
func (m *Meta) AddExportCert(ctx context.Context, r ExportCertRecord) (*ExportCertRecord, error) {
	return proposeAs[ExportCertRecord](ctx, m, Command{Op: opExportCertAdd, ExportCert: &r}, "export certificate")
}
