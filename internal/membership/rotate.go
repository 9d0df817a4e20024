package membership

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// rotateStepTimeout bounds one phase on one member.
const rotateStepTimeout = 30 * time.Second

// RotateCA replaces the cluster CA, driven from this node, in three rounds
// over every member: TRUST (each trusts old and new and signs with the new
// key), REISSUE (each re-issues its node and admin certificates from the
// new CA, committing the serial first, as a renewal does), RETIRE (each
// trusts the new CA alone). A member only acts on the fingerprint of the
// rotation it was told to trust. Connections stay up throughout: every
// round leaves each pair of members able to complete a handshake. A member
// that does not answer stops the rotation before anything changes, unless
// force, in which case it is left out and must rejoin.
func (m *Manager) RotateCA(ctx context.Context, force bool, progress func(step string)) (string, error) {
	cl, ok := m.cluster()
	if !ok {
		return "", status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	if err := m.st.Quorum(ctx); err != nil {
		return "", err
	}
	meta, err := m.meta()
	if err != nil {
		return "", err
	}
	ms, err := meta.State(ctx)
	if err != nil {
		return "", fmt.Errorf("read members: %w", err)
	}
	type member struct{ name, addr string }
	var members []member
	var down []string
	for _, name := range slices.Sorted(maps.Keys(ms.Nodes)) {
		n := ms.Nodes[name]
		if n.State != consensus.NodeMember {
			continue
		}
		if !m.online(ctx, n.BackendAddr) {
			down = append(down, name)
			continue
		}
		members = append(members, member{name, n.BackendAddr})
	}
	if len(down) > 0 && !force {
		return "", status.Errorf(codes.FailedPrecondition, "refusing to rotate the CA: %s not answering and would be cut off (they would have to rejoin); bring them back, or pass --force", strings.Join(down, ", "))
	}
	ca, err := pki.NewCA(cl.Name, m.st.Now())
	if err != nil {
		return "", status.Errorf(codes.Internal, "new CA: %v", err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return "", status.Errorf(codes.Internal, "new CA: %v", err)
	}
	fp := ca.Fingerprint()
	fpHex := hex.EncodeToString(fp[:])
	rounds := []struct {
		phase tandemv1.CARotatePhase
		done  string
	}{
		{tandemv1.CARotatePhase_CA_ROTATE_PHASE_TRUST, "trusts the new CA beside the old one"},
		{tandemv1.CARotatePhase_CA_ROTATE_PHASE_REISSUE, "re-issued its certificates from the new CA"},
		{tandemv1.CARotatePhase_CA_ROTATE_PHASE_RETIRE, "trusts the new CA alone"},
	}
	for _, r := range rounds {
		for _, mb := range members {
			req := &tandemv1.PeerCARotateRequest{Phase: r.phase, CaFingerprint: fpHex}
			if r.phase == tandemv1.CARotatePhase_CA_ROTATE_PHASE_TRUST {
				req.CaPem, req.CaKeyPem = ca.CertPEM(), key
			}
			if err := m.rotateOn(ctx, mb.addr, req); err != nil {
				return "", status.Errorf(codes.Unavailable, "CA rotation stopped at %s on %s: %v; run 'tandem cluster rotate-ca' again to finish with a new CA (members trusting both keep working)", r.phase, mb.name, err)
			}
			progress(fmt.Sprintf("%s %s", mb.name, r.done))
		}
	}
	_ = meta.Audit(ctx, "ca-rotate", fmt.Sprintf("cluster CA replaced, new fingerprint %s; members left out: %s", fpHex, orNone(down)))
	return fpHex, nil
}

func (m *Manager) rotateOn(ctx context.Context, addr string, req *tandemv1.PeerCARotateRequest) error {
	c, err := m.st.Peer(addr)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rotateStepTimeout)
	defer cancel()
	_, err = c.CARotate(rctx, req)
	return err
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// CARotate is one round of a rotation on this member (see RotateCA).
func (r *Renewer) CARotate(ctx context.Context, req *tandemv1.PeerCARotateRequest) (*tandemv1.PeerCARotateResponse, error) {
	mat, ok := r.c.Material()
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	adm, hasAdmin := r.c.Admin()
	switch req.Phase {
	case tandemv1.CARotatePhase_CA_ROTATE_PHASE_TRUST:
		ca, err := pki.LoadCA(req.CaPem, req.CaKeyPem)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "new CA: %v", err)
		}
		if fp := ca.Fingerprint(); hex.EncodeToString(fp[:]) != req.CaFingerprint {
			return nil, status.Error(codes.InvalidArgument, "new CA does not match its fingerprint")
		}
		if !bytes.Contains(mat.CACert, ca.CertPEM()) {
			mat.CACert = append(bytes.TrimRight(slices.Clone(mat.CACert), "\n"), append([]byte("\n"), ca.CertPEM()...)...)
		}
		mat.CAKey = req.CaKeyPem
		if err := r.c.InstallTLS(mat); err != nil {
			return nil, status.Errorf(codes.Internal, "install the CA bundle: %v", err)
		}
		if hasAdmin {
			adm.CACert = mat.CACert
			if err := r.c.InstallAdmin(adm); err != nil {
				return nil, status.Errorf(codes.Internal, "admin CA bundle: %v", err)
			}
		}
		r.c.State.Log.Info("CA rotation: trusting the new CA beside the old one", "fingerprint", req.CaFingerprint)
		return &tandemv1.PeerCARotateResponse{}, nil
	case tandemv1.CARotatePhase_CA_ROTATE_PHASE_REISSUE, tandemv1.CARotatePhase_CA_ROTATE_PHASE_RETIRE:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown CA rotation phase %v", req.Phase)
	}
	ca, err := pki.LoadCA(mat.CACert, mat.CAKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "cluster CA: %v", err)
	}
	if fp := ca.Fingerprint(); hex.EncodeToString(fp[:]) != req.CaFingerprint {
		return nil, status.Errorf(codes.FailedPrecondition, "this node does not sign with the CA %s (a rotation it did not take part in)", req.CaFingerprint)
	}
	if req.Phase == tandemv1.CARotatePhase_CA_ROTATE_PHASE_REISSUE {
		now := r.c.State.Now()
		lifetime := r.c.Lifetime()
		if err := r.renewNode(ctx, ca, mat, now, lifetime); err != nil {
			return nil, status.Errorf(codes.Unavailable, "re-issue the node certificate: %v", err)
		}
		if hasAdmin {
			name := "admin@" + r.c.State.Node.Name
			cert, key, err := ca.IssueAdminFor(name, now, lifetime)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "admin certificate: %v", err)
			}
			adm.Cert, adm.Key = cert, key
			if err := r.c.InstallAdmin(adm); err != nil {
				return nil, status.Errorf(codes.Internal, "admin certificate: %v", err)
			}
		}
		mat, _ = r.c.Material()
		serial, _ := pki.CertSerial(mat.Cert)
		return &tandemv1.PeerCARotateResponse{Serial: serial}, nil
	}
	only := ca.CertPEM()
	if cert := mat.Cert; cert != nil {
		if _, err := pki.ServerTLS(cert, mat.Key, only); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "this node's certificate is not from the new CA yet (re-issue first): %v", err)
		}
	}
	mat.CACert = only
	if err := r.c.InstallTLS(mat); err != nil {
		return nil, status.Errorf(codes.Internal, "install the new CA: %v", err)
	}
	if hasAdmin {
		adm.CACert = only
		if err := r.c.InstallAdmin(adm); err != nil {
			return nil, status.Errorf(codes.Internal, "admin CA: %v", err)
		}
	}
	r.c.State.Log.Info("CA rotation: the old CA is no longer trusted", "fingerprint", req.CaFingerprint)
	return &tandemv1.PeerCARotateResponse{}, nil
}
