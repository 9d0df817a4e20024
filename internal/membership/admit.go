package membership

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// admitTimeout bounds consuming the token and adding the Raft replica.
const admitTimeout = 10 * time.Second

// Admit runs on a member when a node asks to join: it checks the token
// against this cluster's CA and the request, consumes the token, signs the
// node's certificate and adds it to the metadata shard as a voter. The
// joining node then starts its replica and confirms its membership.
//
// Before anything is proposed, attempts are limited per source address and
// the token is checked against the committed metadata with a read
// (Meta.CheckJoin, or Meta.CheckRejoin for a rejoin, rejoin.go): a bogus
// join costs no Raft entry. Every refusal is
// counted by reason and logged in aggregate (joinguard.go).
func (m *Manager) Admit(ctx context.Context, req *tandemv1.PeerJoinRequest) (*tandemv1.PeerJoinResponse, error) {
	src := joinSource(ctx)
	if !m.joins.limit.Allow(src, time.Now()) {
		err := status.Errorf(codes.ResourceExhausted, "too many join attempts from %s: at most %d at once and one every %s; wait and retry", src, joinBurst, joinEvery)
		m.joins.refused(src, RefusedRateLimited, err, time.Now())
		return nil, err
	}
	resp, err := m.admit(ctx, req)
	if err != nil {
		reason, apiErr := refusalOf(err)
		m.joins.refused(src, reason, apiErr, time.Now())
		return nil, apiErr
	}
	return resp, nil
}

func (m *Manager) admit(ctx context.Context, req *tandemv1.PeerJoinRequest) (*tandemv1.PeerJoinResponse, error) {
	cl, ok := m.cluster()
	if !ok {
		return nil, refuse(RefusedUnavailable, status.Error(codes.FailedPrecondition, "this node is not in a cluster"))
	}
	tok, err := pki.ParseJoinToken(req.Token)
	if err != nil {
		return nil, refuse(RefusedMalformed, status.Errorf(codes.InvalidArgument, "%v", err))
	}
	ca, err := pki.LoadCA(cl.CACert, cl.CAKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "cluster CA: %v", err)
	}
	if tok.CAFingerprint != ca.Fingerprint() {
		return nil, refuse(RefusedWrongCluster, status.Error(codes.PermissionDenied, "join token is for another cluster"))
	}
	if err := validate.NodeName(req.NodeName); err != nil {
		return nil, refuse(RefusedBadRequest, status.Error(codes.InvalidArgument, validate.Message(err)))
	}
	addrs := []string{req.BackendAddr, req.RaftAddr, req.AdminAddr, req.ReplicationAddr}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, refuse(RefusedBadRequest, status.Errorf(codes.InvalidArgument, "address %q: %v", a, err))
		}
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	if req.Rejoin {
		return m.admitRejoin(ctx, cl, ca, tok, req)
	}
	meta, err := m.meta()
	if err != nil {
		return nil, err
	}
	role := "data"
	if req.Role == tandemv1.NodeRole_NODE_ROLE_WITNESS {
		role = "witness"
	}
	v := tok.Verifier()
	rec := consensus.NodeRecord{Name: req.NodeName, Role: role, Vote: "voter", BackendAddr: req.BackendAddr, RaftAddr: req.RaftAddr, AdminAddr: req.AdminAddr,
		ReplicationAddr: req.ReplicationAddr, NBDAddr: req.NbdAddr}
	if req.Release != "" && req.Protocol > 0 {
		// Recorded by the join entry itself: the new node's first start
		// then finds its release recorded and proposes nothing more.
		rec.Version, rec.Protocol = req.Release, req.Protocol
	}
	pctx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	// A read, not a proposal: unknown, wrong, used and expired tokens stop
	// here. The state machine checks again when the join applies.
	if err := meta.CheckJoin(pctx, tok.IDString(), hex.EncodeToString(v[:]), rec); err != nil {
		return nil, refuse(metaRefusal(err), apierr.FromMeta(err))
	}
	if err := checkRelease(meta, req.NodeName, req.Protocol, "join"); err != nil {
		return nil, err
	}
	// Peers and dragonboat dial the node by IP and verify it. The
	// certificate is signed before the join is proposed so that its serial
	// goes into the node's record: removal revokes what the record lists.
	ips := certIPs(addrs...)
	cert, err := ca.SignNodeFor(req.CsrPem, req.NodeName, ips, m.st.Now(), CertLifetime(m.st))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	serial, err := pki.CertSerial(cert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signed certificate: %v", err)
	}
	_, notAfter, err := pki.RenewAt(cert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signed certificate: %v", err)
	}
	rec.CertSerials, rec.CertNotAfter = []string{serial}, notAfter
	replica, err := meta.Join(pctx, tok.IDString(), hex.EncodeToString(v[:]), rec)
	if err != nil {
		return nil, refuse(metaRefusal(err), apierr.FromMeta(err))
	}
	if err := meta.AddVoter(pctx, replica, req.RaftAddr); err != nil {
		return nil, apierr.FromMeta(fmt.Errorf("add %s to the metadata shard: %w", req.NodeName, err))
	}
	// No admin token: a node's local admin is its root-only unix socket,
	// and API credentials belong to people, not nodes.
	resp := &tandemv1.PeerJoinResponse{
		ClusterName: cl.Name, ClusterId: cl.ID, ReplicaId: replica,
		CaPem: cl.CACert, CaKeyPem: cl.CAKey, CertPem: cert,
		ClusterSecret: cl.Secret,
	}
	if len(cl.Secret) == 0 {
		m.st.Log.Warn("this member has no cluster secret to hand to the joining node; BMC passwords cannot be sealed there until cluster.secret is copied to it", "node", req.NodeName)
	}
	if mem, err := meta.LocalMembership(); err == nil {
		for rid, a := range mem.Voters {
			resp.Members = append(resp.Members, &tandemv1.PeerMember{ReplicaId: rid, RaftAddr: a})
		}
	}
	m.st.Log.Info("admitted node", "node", req.NodeName, "replica", replica, "token", tok.IDString())
	return resp, nil
}

// checkRelease refuses a node whose protocol level is below the cluster
// version: it could not apply the commands the cluster already uses, and
// would join, then halt at the first entry above its level. It runs once
// the token is known good (it copies the state: not for strangers).
func checkRelease(meta state.Meta, node string, protocol uint32, what string) error {
	ms, err := meta.LocalState()
	if err != nil {
		return nil // the state machine's own gate still holds
	}
	if have, need := max(protocol, consensus.BaseClusterVersion), ms.Version(); have < need {
		return refuse(RefusedOldRelease, status.Errorf(codes.FailedPrecondition,
			"node %s runs protocol level %d but the cluster is at version %d: install the release the members run (see tandem cluster upgrade-status) on it, then %s again", node, have, need, what))
	}
	return nil
}
