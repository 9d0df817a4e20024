package membership

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// A node whose certificate expired while it was off cannot renew it (no
// member accepts it any more, and a renewal is committed through them), so
// it starts stopped: its data stays, nothing of the cluster runs. The
// operator makes a join token on a member and runs 'tandem cluster rejoin'
// on the node: it asks a member, through the same unauthenticated
// Peer/Join call a joining node uses, to re-admit it. The member checks
// the token exactly as for a join, then that the node is a member that was
// not removed, signs its new certificate and commits the serial to the
// node's record (consensus op node-rejoin); the node keeps its replica ID,
// Raft logs and replicas, so its volumes resync incrementally.

// Rejoin refusals, counted with the join refusals (joinguard.go).
const (
	RefusedUnknownNode = "unknown_node"
	RefusedRemovedNode = "removed_node"
)

// RejoinHooks is the daemon's side of a rejoin. Its methods but Resumed
// are called with Init's lock held.
type RejoinHooks interface {
	// StoppedLocked is this node's identity when it belongs to a cluster
	// but does not run in it, with the reason; false otherwise.
	StoppedLocked() (id Identity, why string, ok bool)
	// RunningLocked is this node's identity when it runs in its cluster.
	RunningLocked() (id Identity, ok bool)
	// RefreshLocked installs m on a running node (every file or none,
	// crash-safely): servers and dials use it from their next handshake,
	// and peers' certificates are checked by view until this node's
	// metadata replica has applied view.Applied.
	RefreshLocked(ctx context.Context, m Material, view *consensus.CertView) error
	// ResumeLocked installs m (every file or none, crash-safely), checks
	// peers' certificates by view until this node's metadata replica has
	// applied view.Applied, and starts the Raft host, the metadata replica
	// and the servers as a restart does.
	ResumeLocked(ctx context.Context, m Material, view *consensus.CertView) error
	// Resumed runs what follows a start, without the lock: the node's
	// volumes are opened again (their replicas resync incrementally).
	Resumed(ctx context.Context)
}

// RejoinCommand is what an operator runs on a stopped node, for its status
// and its log.
func RejoinCommand() string {
	return "on a member: 'tandem cluster token'; then on this node: 'tandem cluster rejoin <backend address of a member> --token-file FILE'"
}

// Rejoin runs on a node that belongs to a cluster but cannot work in it:
// stopped because its certificate expired while it was off, or running
// without reaching a quorum (left out of a CA rotation, so every member
// refuses it). It makes a new key, asks the member at addr to re-admit it
// with the join token, installs the new certificate and the cluster's
// current CA, and starts as after a restart (or, running, uses them from
// the next handshake).
func (m *Manager) Rejoin(ctx context.Context, addr, token string) (Identity, error) {
	tok, err := pki.ParseJoinToken(token)
	if err != nil {
		return Identity{}, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Identity{}, status.Errorf(codes.InvalidArgument, "address %q: want host:port of a member's backend address", addr)
	}
	if m.rejoin == nil {
		return Identity{}, status.Error(codes.Unimplemented, "rejoin is not available on this node")
	}
	// A running node that reaches a quorum has a certificate that works.
	// Asked before the lock: the quorum check reads the handles it guards.
	if m.st.Meta() != nil {
		if err := m.st.Quorum(ctx); err == nil {
			return Identity{}, status.Error(codes.FailedPrecondition, "this node runs in its cluster and reaches a quorum: its certificate works (it renews itself); rejoin is for a node stopped because its certificate expired, or cut off from every member (left out of a CA rotation)")
		}
	}
	id, resumed, err := m.rejoinLocked(ctx, addr, token, tok)
	if err != nil {
		return Identity{}, err
	}
	if resumed {
		m.rejoin.Resumed(ctx)
	}
	m.st.Log.Info("rejoined cluster", "cluster", id.ClusterName, "replica", id.ReplicaID, "via", addr)
	return id, nil
}

// rejoinLocked is Rejoin up to the start, under Init's lock; resumed is
// true when a stopped node started (Resumed follows).
func (m *Manager) rejoinLocked(ctx context.Context, addr, token string, tok pki.JoinToken) (_ Identity, resumed bool, _ error) {
	in := m.init
	in.Lock()
	defer in.Unlock()
	id, why, stopped := m.rejoin.StoppedLocked()
	if !stopped {
		running := false
		if id, running = m.rejoin.RunningLocked(); !running {
			return Identity{}, false, status.Error(codes.FailedPrecondition, "this node is not in a cluster: join one with 'tandem cluster join ADDR --token T'")
		}
		why = "running without a quorum"
	}
	node := m.st.Node
	key, err := pki.NewKey()
	if err != nil {
		return Identity{}, false, status.Errorf(codes.Internal, "node key: %v", err)
	}
	csr, err := pki.NewCSR(key, node.Name)
	if err != nil {
		return Identity{}, false, status.Errorf(codes.Internal, "node CSR: %v", err)
	}
	// As for a join: the token's CA fingerprint authenticates the member.
	// This node's own CA may be stale (rotated while it was off).
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(tok.CAFingerprint))))
	if err != nil {
		return Identity{}, false, status.Errorf(codes.InvalidArgument, "dial %s: %v", addr, err)
	}
	defer conn.Close()
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	role := tandemv1.NodeRole_NODE_ROLE_DATA
	if node.Role == "witness" {
		role = tandemv1.NodeRole_NODE_ROLE_WITNESS
	}
	resp, err := tandemv1.NewPeerClient(conn).Join(jctx, &tandemv1.PeerJoinRequest{
		Token: token, NodeName: node.Name, Role: role, CsrPem: csr,
		BackendAddr: node.BackendAddr, RaftAddr: node.RaftAddr, AdminAddr: node.AdminAddr,
		ReplicationAddr: node.ReplicationAddr, NbdAddr: node.NBDAddr,
		Rejoin: true, ReplicaId: id.ReplicaID, Protocol: version.ProtocolLevel(), Release: version.String(),
	}, grpc.WaitForReady(true))
	if err != nil {
		st := status.Convert(err)
		if code := st.Code(); code == codes.Unavailable || code == codes.DeadlineExceeded {
			return Identity{}, false, status.Errorf(codes.Unavailable, "cannot reach a cluster member at %s: %s", addr, st.Message())
		}
		return Identity{}, false, status.Errorf(st.Code(), "rejoin refused by %s: %s", addr, st.Message())
	}
	mat, view, err := checkRejoinResponse(resp, tok.CAFingerprint, id, key, addr)
	if err != nil {
		return Identity{}, false, err
	}
	m.st.Log.Info("re-admitted by the cluster; installing the new certificate", "via", addr, "was", why)
	if !stopped {
		if err := m.rejoin.RefreshLocked(ctx, mat, view); err != nil {
			return Identity{}, false, status.Errorf(codes.Internal, "the cluster re-admitted this node but its new certificate could not be installed: %v", err)
		}
	} else if err := m.rejoin.ResumeLocked(ctx, mat, view); err != nil {
		return Identity{}, false, status.Errorf(codes.Internal, "the cluster re-admitted this node but it could not start: %v (its new certificate is installed: fix the cause and restart tandemd)", err)
	}
	// The admin certificate expired too, and may name the old CA.
	if ca, err := pki.LoadCA(resp.CaPem, resp.CaKeyPem); err == nil {
		if err := saveAdmin(in, ca, node, "", m.st.Now()); err != nil {
			m.st.Log.Warn("admin certificate not re-issued after the rejoin; it is renewed at the next check", "err", err)
		}
	}
	return id, stopped, nil
}

// checkRejoinResponse checks a member's answer against the token and this
// node's identity, and returns the material to install and the member's
// certificate view.
func checkRejoinResponse(resp *tandemv1.PeerJoinResponse, fp [32]byte, id Identity, key []byte, addr string) (Material, *consensus.CertView, error) {
	got, err := pki.CertFingerprint(resp.CaPem)
	if err != nil || got != fp {
		return Material{}, nil, status.Errorf(codes.PermissionDenied, "member at %s sent a CA that does not match the token", addr)
	}
	if resp.ClusterId != id.ClusterID || resp.ReplicaId != id.ReplicaID {
		return Material{}, nil, status.Errorf(codes.FailedPrecondition, "member at %s answered for cluster %q (id %s) replica %d, but this node is replica %d of cluster %q (id %s); nothing was changed here", addr, resp.ClusterName, resp.ClusterId, resp.ReplicaId, id.ReplicaID, id.ClusterName, id.ClusterID)
	}
	if _, err := pki.LoadCA(resp.CaPem, resp.CaKeyPem); err != nil {
		return Material{}, nil, status.Errorf(codes.Internal, "cluster CA from %s: %v", addr, err)
	}
	// The certificate must serve before anything is replaced.
	if _, err := pki.ServerTLS(resp.CertPem, key, resp.CaPem); err != nil {
		return Material{}, nil, status.Errorf(codes.Internal, "certificate from %s: %v", addr, err)
	}
	cv := resp.GetCertView()
	if cv == nil {
		return Material{}, nil, status.Errorf(codes.Internal, "member at %s sent no certificate view with the rejoin", addr)
	}
	var nodes []consensus.CertViewNode
	for _, n := range cv.Nodes {
		nodes = append(nodes, consensus.CertViewNode{Name: n.Name, Removed: n.Removed, Serials: n.Serials})
	}
	view := consensus.NewCertView(nodes, cv.RevokedSerials, cv.AppliedIndex)
	return Material{CACert: resp.CaPem, CAKey: resp.CaKeyPem, Cert: resp.CertPem, Key: key}, view, nil
}

// admitRejoin runs on a member when a node asks to rejoin (Admit with
// req.Rejoin), after the checks a join shares: the token's form and CA,
// the node name, the addresses, quorum.
func (m *Manager) admitRejoin(ctx context.Context, cl Cluster, ca *pki.CA, tok pki.JoinToken, req *tandemv1.PeerJoinRequest) (*tandemv1.PeerJoinResponse, error) {
	meta, err := m.meta()
	if err != nil {
		return nil, err
	}
	v := tok.Verifier()
	rc := consensus.RejoinCmd{TokenID: tok.IDString(), Verifier: hex.EncodeToString(v[:]), Name: req.NodeName, ReplicaID: req.ReplicaId}
	pctx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	// A read, not a proposal: bad tokens, unknown and removed nodes stop
	// here. The state machine checks again when the rejoin applies.
	rec, err := meta.CheckRejoin(pctx, rc)
	if err != nil {
		return nil, rejoinRefusal(err)
	}
	if err := checkRelease(meta, req.NodeName, req.Protocol, "rejoin"); err != nil {
		return nil, err
	}
	// The node keeps its recorded addresses: peers dial those, and its
	// certificate names them.
	if got, want := []string{req.BackendAddr, req.RaftAddr, req.AdminAddr, req.ReplicationAddr}, []string{rec.BackendAddr, rec.RaftAddr, rec.AdminAddr, rec.ReplicationAddr}; !sameAddrs(got, want) {
		return nil, refuse(RefusedBadRequest, status.Errorf(codes.InvalidArgument, "node %s asks to rejoin with addresses %v, but its record has %v: a rejoin keeps the recorded addresses; restore them in its configuration", req.NodeName, got, want))
	}
	cert, err := ca.SignNodeFor(req.CsrPem, req.NodeName, recordIPs(rec), m.st.Now(), CertLifetime(m.st))
	if err != nil {
		return nil, refuse(RefusedBadRequest, status.Errorf(codes.InvalidArgument, "certificate request: %v", err))
	}
	serial, err := pki.CertSerial(cert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signed certificate: %v", err)
	}
	_, notAfter, err := pki.RenewAt(cert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signed certificate: %v", err)
	}
	rc.Serial, rc.NotAfter = serial, notAfter
	rec, err = meta.Rejoin(pctx, rc)
	if err != nil {
		return nil, rejoinRefusal(err)
	}
	// The node's replica is behind: it does not know the certificates its
	// peers renewed meanwhile. It checks them by this view until it caught
	// up; the rejoin just applied here, so the view holds its new serial.
	ms, err := meta.LocalState()
	if err != nil {
		return nil, apierr.FromMeta(fmt.Errorf("read the metadata after the rejoin: %w", err))
	}
	nodes, revoked, applied := consensus.CertViewOf(ms)
	view := &tandemv1.PeerCertView{RevokedSerials: revoked, AppliedIndex: applied}
	for _, n := range nodes {
		view.Nodes = append(view.Nodes, &tandemv1.PeerNodeCerts{Name: n.Name, Removed: n.Removed, Serials: n.Serials})
	}
	resp := &tandemv1.PeerJoinResponse{
		ClusterName: cl.Name, ClusterId: cl.ID, ReplicaId: rec.ReplicaID,
		CaPem: cl.CACert, CaKeyPem: cl.CAKey, CertPem: cert, CertView: view,
	}
	if mem, err := meta.LocalMembership(); err == nil {
		for rid, a := range mem.Voters {
			resp.Members = append(resp.Members, &tandemv1.PeerMember{ReplicaId: rid, RaftAddr: a})
		}
	}
	m.st.Log.Info("re-admitted node", "node", req.NodeName, "replica", rec.ReplicaID, "serial", serial, "token", tok.IDString())
	return resp, nil
}

// rejoinRefusal tags a refusal of the metadata's rejoin check with its
// reason and API error.
func rejoinRefusal(err error) error {
	switch {
	case errors.Is(err, consensus.ErrNodeNotFound):
		return refuse(RefusedUnknownNode, status.Error(codes.NotFound, err.Error()))
	case errors.Is(err, consensus.ErrCertRevoked):
		return refuse(RefusedRemovedNode, status.Error(codes.PermissionDenied, err.Error()))
	}
	return refuse(metaRefusal(err), apierr.FromMeta(err))
}

func sameAddrs(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// recordIPs are the IP addresses of a node's record, for its certificate.
func recordIPs(n consensus.NodeRecord) []net.IP {
	return certIPs(n.BackendAddr, n.RaftAddr, n.AdminAddr, n.ReplicationAddr, n.NBDAddr)
}
