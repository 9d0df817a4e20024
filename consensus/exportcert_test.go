package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestExportCertRecords: an issued export certificate is recorded with who
// signed it and when, a retried proposal answers the same record, another
// certificate of a taken name is refused, the record survives a snapshot,
// and revoking its serial makes the revocation rule refuse it.
func TestExportCertRecords(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	apply := func(c Command) error {
		c.At, c.By = at, "n1"
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	rec := ExportCertRecord{Name: "backup", Serial: "ab", Volumes: []string{"db"}, NotAfter: at.Add(time.Hour), IssuedBy: "admin socket"}
	for i := range 2 { // the second is a retried proposal
		if err := apply(Command{Op: opExportCertAdd, ExportCert: &rec}); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	got := m.s.ExportCerts["backup"]
	if got == nil || got.IssuedOn != "n1" || !got.IssuedAt.Equal(at) || got.Serial != "ab" {
		t.Fatalf("record %+v", got)
	}
	if n := strings.Count(m.s.Audit[len(m.s.Audit)-1].Detail, "backup"); n != 1 || m.s.Audit[len(m.s.Audit)-1].Action != "export-cert-issue" {
		t.Errorf("audit %+v", m.s.Audit)
	}
	other := rec
	other.Serial = "cd"
	if err := apply(Command{Op: opExportCertAdd, ExportCert: &other}); !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a taken name: %v", err)
	}
	if err := apply(Command{Op: opExportCertAdd, ExportCert: &ExportCertRecord{Name: "x"}}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("an incomplete record: %v", err)
	}
	if got := m.s.clone().ExportCerts["backup"]; got == nil || got.Volumes[0] != "db" {
		t.Errorf("after a snapshot round trip: %+v", got)
	}
	ref := CertRef{Serial: "ab", CommonName: "backup", OU: "export"}
	if err := m.s.checkCert(ref); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := apply(Command{Op: opRevokeCert, Revoke: &RevokedCert{Serial: "ab", Subject: "CN=backup,OU=export", NotAfter: rec.NotAfter}}); err != nil {
		t.Fatal(err)
	}
	if err := m.s.checkCert(ref); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("after revocation: %v", err)
	}
}
