package volume

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Export certificates (docs/design.md §7): the TCP NBD export serves TLS
// clients only, and what a client may open follows from its certificate:
// OU "export" opens the volumes in its URI SANs, OU "admin" every volume,
// anything else (node certificates included: no part of Tandem reads a
// volume over TCP NBD) none.

// maxExportCertDays bounds an export certificate's lifetime.
const maxExportCertDays = 10 * 365

// errNotAuthorized is the (logged, never sent) reason of an NBD refusal.
var errNotAuthorized = errors.New("not authorized")

// AuthorizeNBD is the TCP NBD export's authorization (nbd.Authorize):
// state carries the client's verified chain. A certificate that CertCheck
// refuses (revoked) sees nothing.
func (m *Manager) AuthorizeNBD(ctx context.Context, state tls.ConnectionState, name string) error {
	cn, ou, ok := pki.PeerIdentity(state)
	if !ok {
		return fmt.Errorf("%w: no verified client certificate", errNotAuthorized)
	}
	leaf := state.VerifiedChains[0][0]
	if m.certCheck != nil {
		if err := m.certCheck(leaf); err != nil {
			return fmt.Errorf("%w: certificate %s (%s, serial %x): %w", errNotAuthorized, cn, ou, leaf.SerialNumber, err)
		}
	}
	switch ou {
	case pki.OUAdmin:
		return nil
	case pki.OUExport:
		if slices.Contains(pki.ExportVolumes(leaf), name) {
			return nil
		}
		return fmt.Errorf("%w: export certificate %s does not name volume %q", errNotAuthorized, cn, name)
	default:
		return fmt.Errorf("%w: a %s certificate (%s) opens no volume over TCP", errNotAuthorized, ou, cn)
	}
}

// ListNBD lists, for NBD_OPT_LIST, the volumes this node serves as
// primary; the server filters them through AuthorizeNBD.
func (m *Manager) ListNBD(context.Context) ([]nbd.ListEntry, error) {
	vols := m.openVolumes()
	var out []nbd.ListEntry
	for _, nv := range vols {
		if nv.servingPrimary() != nil {
			out = append(out, nbd.ListEntry{Name: nv.entry.Name, Description: "tandem volume " + nv.entry.Name})
		}
	}
	slices.SortFunc(out, func(a, b nbd.ListEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// IssueExportCert signs an export certificate for the caller's CSR and
// records it in the metadata shard (the admin call). by names the admin
// credential that asked.
func (m *Manager) IssueExportCert(ctx context.Context, req *tandemv1.IssueExportCertRequest, by string) (*tandemv1.IssueExportCertResponse, error) {
	switch {
	case validate.ExportCertName(req.Name) != nil:
		return nil, status.Error(codes.InvalidArgument, validate.Message(validate.ExportCertName(req.Name)))
	case len(req.Volumes) == 0:
		return nil, status.Error(codes.InvalidArgument, "name at least one volume (--volume) the certificate may open")
	case req.Days > maxExportCertDays:
		return nil, status.Errorf(codes.InvalidArgument, "days %d: at most %d", req.Days, maxExportCertDays)
	case len(req.CsrPem) == 0:
		return nil, status.Error(codes.InvalidArgument, "missing CSR (csr_pem)")
	}
	vols := slices.Clone(req.Volumes)
	slices.Sort(vols)
	vols = slices.Compact(vols)
	if m.ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node cannot sign certificates")
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if e, ok := ms.Volumes[v]; !ok || e.State == consensus.VolumeDeleting {
			return nil, status.Errorf(codes.NotFound, "no volume named %q", v)
		}
	}
	if old, ok := ms.ExportCerts[req.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "an export certificate named %q exists (serial %s, volumes %s); choose another name", req.Name, old.Serial, strings.Join(old.Volumes, ","))
	}
	ca, err := m.ca()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster CA: %v", err)
	}
	days := req.Days
	if days == 0 {
		days = uint32(pki.ExportValidity / (24 * time.Hour))
	}
	certPEM, err := ca.SignExport(req.CsrPem, req.Name, vols, m.st.Now(), time.Duration(days)*24*time.Hour)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	rec, err := m.meta().AddExportCert(ctx, consensus.ExportCertRecord{
		Name: req.Name, Serial: pki.SerialHex(cert), Volumes: vols, NotAfter: cert.NotAfter, IssuedBy: by})
	if err != nil {
		// Never recorded, so never handed out: the signed certificate is dropped.
		return nil, metaError(err)
	}
	cl, _ := m.st.Cluster()
	out := &tandemv1.IssueExportCertResponse{CertPem: certPEM, CaPem: cl.CACert, Cert: exportCertProto(rec)}
	for _, n := range ms.Nodes {
		if n.State == consensus.NodeMember && n.NBDAddr != "" {
			out.NbdAddrs = append(out.NbdAddrs, n.NBDAddr)
		}
	}
	slices.Sort(out.NbdAddrs)
	m.log.Info("export certificate issued", "name", rec.Name, "serial", rec.Serial, "volumes", rec.Volumes, "by", by, "expires", rec.NotAfter)
	return out, nil
}

// ListExportCerts lists the issued export certificates (the admin call).
func (m *Manager) ListExportCerts(ctx context.Context) (*tandemv1.ListExportCertsResponse, error) {
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	out := &tandemv1.ListExportCertsResponse{}
	for _, r := range ms.ExportCerts {
		c := exportCertProto(r)
		_, c.Revoked = ms.Revoked[r.Serial]
		out.Certs = append(out.Certs, c)
	}
	slices.SortFunc(out.Certs, func(a, b *tandemv1.ExportCert) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RevokeExportCert puts export certificate name on the cluster's
// revocation list (the admin call): every node refuses it in the NBD TLS
// handshake once it applied the entry.
func (m *Manager) RevokeExportCert(ctx context.Context, name, by string) (*tandemv1.ExportCert, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	r, ok := ms.ExportCerts[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no export certificate named %q ('tandem volume export-cert list' lists them)", name)
	}
	if _, done := ms.Revoked[r.Serial]; !done {
		err := m.meta().RevokeCert(ctx, consensus.RevokedCert{Serial: r.Serial, Subject: "CN=" + r.Name + ",OU=" + pki.OUExport,
			Reason: "export certificate revoked by " + by, NotAfter: r.NotAfter})
		if err != nil {
			return nil, metaError(err)
		}
		m.log.Info("export certificate revoked", "name", r.Name, "serial", r.Serial, "by", by)
	}
	out := exportCertProto(r)
	out.Revoked = true
	return out, nil
}

func exportCertProto(r *consensus.ExportCertRecord) *tandemv1.ExportCert {
	return &tandemv1.ExportCert{Name: r.Name, Serial: r.Serial, Volumes: r.Volumes, NotAfter: timestamppb.New(r.NotAfter),
		IssuedBy: r.IssuedBy, IssuedOn: r.IssuedOn, IssuedAt: timestamppb.New(r.IssuedAt)}
}

// CertCheck refuses a client certificate that may no longer be used (the
// cluster's revocation list); nil accepts it. The NBD authorization calls
// it first, next to the TLS handshake's own check.
type CertCheck = pki.CertCheck
