package volume

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// verified is the TLS state of a client whose certificate verified.
func verified(t *testing.T, certPEM []byte) tls.ConnectionState {
	t.Helper()
	c, err := pki.ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
}

func csr(t *testing.T) []byte {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.NewCSR(key, "x")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuthorizeNBD: an export certificate opens only its volumes, an admin
// certificate every volume, a node certificate none, and a certificate
// CertCheck refuses nothing.
func TestAuthorizeNBD(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("c1", now)
	if err != nil {
		t.Fatal(err)
	}
	exportPEM, err := ca.SignExport(csr(t), "backup", []string{"a", "c"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	adminPEM, _, err := ca.IssueAdmin("root", now)
	if err != nil {
		t.Fatal(err)
	}
	nodePEM, err := ca.SignNode(csr(t), "n2", []net.IP{net.ParseIP("10.0.0.2")}, now)
	if err != nil {
		t.Fatal(err)
	}
	m := newWorld().manager(t)
	ctx := context.Background()
	for _, tc := range []struct {
		who  string
		cert []byte
		name string
		ok   bool
	}{
		{"export", exportPEM, "a", true},
		{"export", exportPEM, "c", true},
		{"export", exportPEM, "b", false},
		{"admin", adminPEM, "b", true},
		{"node", nodePEM, "a", false},
	} {
		err := m.AuthorizeNBD(ctx, verified(t, tc.cert), tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("%s certificate, volume %s: %v, want allowed=%v", tc.who, tc.name, err, tc.ok)
		}
	}
	if err := m.AuthorizeNBD(ctx, tls.ConnectionState{}, "a"); err == nil {
		t.Error("a client without a verified chain was allowed")
	}
	revoked := errors.New("revoked")
	m.certCheck = func(c *x509.Certificate) error {
		if c.Subject.CommonName == "backup" {
			return revoked
		}
		return nil
	}
	if err := m.AuthorizeNBD(ctx, verified(t, exportPEM), "a"); !errors.Is(err, revoked) {
		t.Errorf("a revoked export certificate: %v", err)
	}
	if err := m.AuthorizeNBD(ctx, verified(t, adminPEM), "a"); err != nil {
		t.Errorf("admin after another certificate's revocation: %v", err)
	}
}

// TestExportMigrationWindowRemote: during an open migration window, a TLS
// client of the TCP export gets a read-only export whose writes fail
// without asking the primary to hand over; the unix socket's client gets
// the writable export that takes over.
func TestExportMigrationWindowRemote(t *testing.T) {
	w := newWorld()
	m := w.manager(t)
	open := window(consensus.UpToDate)
	secondary(t, m, &fakeShard{rec: open}, open)

	ctx := nbd.ContextWithClientTLS(context.Background(), tls.ConnectionState{})
	exp, err := m.Export(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if !exp.ReadOnly {
		t.Error("a TLS client's export of the migration window is writable")
	}
	// The server refuses writes to a read-only export; the volume refuses
	// them too, before any peer call.
	for name, write := range map[string]func() error{
		"write":        func() error { _, err := exp.Volume.WriteAt(ctx, make([]byte, 4096), 0, 0); return err },
		"trim":         func() error { return exp.Volume.Trim(ctx, 0, 4096) },
		"write zeroes": func() error { return exp.Volume.WriteZeroes(ctx, 0, 4096, 0) },
	} {
		if err := write(); !errors.Is(err, blockstore.ErrReadOnly) || !strings.Contains(err.Error(), "only this node's own QEMU") {
			t.Errorf("%s from a TLS client: %v", name, err)
		}
	}
	if got := strings.Join(w.j.List(), "\n"); got != "" {
		t.Errorf("a TLS client's write reached the cluster:\n%s", got)
	}
	b := make([]byte, 4096)
	if _, err := exp.Volume.ReadAt(ctx, b, 0); err != nil {
		t.Errorf("read from the window: %v", err)
	}

	local, err := m.Export(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if mv, ok := local.Volume.(migrationVolume); !ok || mv.remote || local.ReadOnly {
		t.Errorf("the unix socket's export: %T %+v read-only %v", local.Volume, local.Volume, local.ReadOnly)
	}
}

// TestIssueExportCert: bad input is refused before anything is signed or
// recorded; a good request is signed for the CSR's key and recorded.
func TestIssueExportCert(t *testing.T) {
	w := newWorld()
	m := w.manager(t)
	ca, err := pki.NewCA("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.ca = func() (*pki.CA, error) { return ca, nil }
	ctx := context.Background()
	good := csr(t)
	for _, tc := range []struct {
		req  *tandemv1.IssueExportCertRequest
		code codes.Code
		msg  string
	}{
		{&tandemv1.IssueExportCertRequest{Name: "Bad/name", Volumes: []string{"v"}, CsrPem: good}, codes.InvalidArgument, "export certificate name"},
		{&tandemv1.IssueExportCertRequest{Name: "b", CsrPem: good}, codes.InvalidArgument, "at least one volume"},
		{&tandemv1.IssueExportCertRequest{Name: "b", Volumes: []string{"v"}}, codes.InvalidArgument, "missing CSR"},
		{&tandemv1.IssueExportCertRequest{Name: "b", Volumes: []string{"v"}, CsrPem: good, Days: 99999}, codes.InvalidArgument, "days"},
		{&tandemv1.IssueExportCertRequest{Name: "b", Volumes: []string{"nope"}, CsrPem: good}, codes.NotFound, `no volume named "nope"`},
		{&tandemv1.IssueExportCertRequest{Name: "b", Volumes: []string{"v"}, CsrPem: []byte("junk")}, codes.InvalidArgument, "CERTIFICATE REQUEST"},
	} {
		_, err := m.IssueExportCert(ctx, tc.req, "admin")
		if s := status.Convert(err); s.Code() != tc.code || !strings.Contains(s.Message(), tc.msg) {
			t.Errorf("%+v: %v, want %v %q", tc.req, err, tc.code, tc.msg)
		}
	}
	if got := strings.Join(w.j.List(), "\n"); got != "" {
		t.Fatalf("refused requests changed something:\n%s", got)
	}
	resp, err := m.IssueExportCert(ctx, &tandemv1.IssueExportCertRequest{Name: "backup", Volumes: []string{"v", "v"}, CsrPem: good, Days: 2}, "root")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCert(resp.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	if got := pki.ExportVolumes(c); len(got) != 1 || got[0] != "v" || resp.Cert.Name != "backup" || resp.Cert.IssuedBy != "root" {
		t.Fatalf("issued %v %+v", got, resp.Cert)
	}
	if got := strings.Join(w.j.List(), "\n"); !strings.Contains(got, "export-cert backup [v] by root") {
		t.Fatalf("not recorded:\n%s", got)
	}
	w.meta.fresh.ExportCerts = map[string]*consensus.ExportCertRecord{"backup": {Name: "backup", Serial: "1", Volumes: []string{"v"}}}
	if _, err := m.IssueExportCert(ctx, &tandemv1.IssueExportCertRequest{Name: "backup", Volumes: []string{"v"}, CsrPem: good}, "root"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("a taken name: %v", err)
	}
}

// TestRevokeExportCert: an unknown name is NotFound and changes nothing;
// a known one puts its serial on the revocation list once.
func TestRevokeExportCert(t *testing.T) {
	w := newWorld()
	m := w.manager(t)
	ctx := context.Background()
	if _, err := m.RevokeExportCert(ctx, "nope", "root"); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown name: %v", err)
	}
	if got := w.j.List(); len(got) != 0 {
		t.Fatalf("a refused revocation changed something: %v", got)
	}
	w.meta.fresh.ExportCerts = map[string]*consensus.ExportCertRecord{"backup": {Name: "backup", Serial: "ab12", Volumes: []string{"v"}}}
	c, err := m.RevokeExportCert(ctx, "backup", "root")
	if err != nil || !c.Revoked || c.Serial != "ab12" {
		t.Fatalf("revoke: %v %+v", err, c)
	}
	if got := strings.Join(w.j.List(), "\n"); got != "revoke ab12 CN=backup,OU=export" {
		t.Fatalf("journal %q", got)
	}
	w.meta.fresh.Revoked = map[string]*consensus.RevokedCert{"ab12": {Serial: "ab12"}}
	if _, err := m.RevokeExportCert(ctx, "backup", "root"); err != nil || w.j.Count("revoke") != 1 {
		t.Fatalf("second revoke: %v, %d revocations", err, w.j.Count("revoke"))
	}
}
