package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// peerService is the backend API between nodes: one gRPC service with
// methods of every subsystem (membership here, volumes in volume.go, VMs
// in vm.go, HA liveness here).
type peerService struct {
	tandemv1.UnimplementedPeerServer
	a *Services
}

func (s *peerService) Join(ctx context.Context, req *tandemv1.PeerJoinRequest) (*tandemv1.PeerJoinResponse, error) {
	resp, err := s.a.cfg.Members.Admit(ctx, req)
	if err != nil {
		// Membership counts and logs refusals in aggregate: anyone may
		// send joins, so one line each would let them fill the log.
		s.a.log.Debug("join refused", "node", req.NodeName, "err", grpcMessage(err))
		return nil, toStatus(err)
	}
	return resp, nil
}

func (s *peerService) Ping(_ context.Context, req *tandemv1.PingRequest) (*tandemv1.PingResponse, error) {
	if req.LeaderTerm != 0 {
		s.a.cfg.HA.LeaderPing(req.From, req.LeaderTerm, req.Unreachable)
	}
	resp := &tandemv1.PingResponse{Name: s.a.cfg.State.Node.Name, Now: timestamppb.Now(), Version: version.String()}
	if id := s.a.cfg.Node.ReplicaID(); id != 0 {
		resp.ReplicaId = id
		if m := s.a.cfg.State.Meta(); m != nil {
			resp.LeaderId, resp.Term, _ = m.Leader()
		}
	}
	return resp, nil
}

// MetaSync returns once this node applied every metadata change committed
// when it was called (a linearizable read): credential changes wait for it
// on every member.
func (s *peerService) MetaSync(ctx context.Context, _ *tandemv1.MetaSyncRequest) (*tandemv1.MetaSyncResponse, error) {
	m := s.a.cfg.State.Meta()
	if m == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	ms, err := m.State(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.MetaSyncResponse{Applied: ms.Applied}, nil
}

// HALiveness answers from this node's detector (the leader's).
func (s *peerService) HALiveness(_ context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return answer(s.a.cfg.HA.Liveness())
}

func (s *peerService) CARotate(ctx context.Context, req *tandemv1.PeerCARotateRequest) (*tandemv1.PeerCARotateResponse, error) {
	return answer(s.a.cfg.Certs.CARotate(ctx, req))
}

// NodeRemoved is a member telling this node that it was removed. The proof
// is the caller: a node certificate this node's handshake accepted (CA and
// revocation list) and a name its metadata knows as a member, stating the
// removal for this node and this cluster. Such a caller may already stop
// this node's VMs through the peer API; it is not taken on a guess (a
// refused handshake, say). See recovery.Manager.Removed for what stops.
func (s *peerService) NodeRemoved(ctx context.Context, req *tandemv1.PeerNodeRemovedRequest) (*tandemv1.PeerNodeRemovedResponse, error) {
	st := s.a.cfg.State
	c, ok := st.Cluster()
	switch {
	case !ok:
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	case req.GetNode() != st.Node.Name:
		return nil, status.Errorf(codes.InvalidArgument, "this is node %s, not %q: a removal notice is for the removed node only", st.Node.Name, req.GetNode())
	case req.GetClusterId() != c.ID:
		return nil, status.Errorf(codes.FailedPrecondition, "this node is in cluster %s (%s), not %q", c.Name, c.ID, req.GetClusterId())
	}
	caller, _, _ := peerCert(ctx)
	if caller == st.Node.Name {
		return nil, status.Error(codes.PermissionDenied, "a node cannot tell itself that it was removed")
	}
	if m := st.Meta(); m != nil {
		if ms, err := m.LocalState(); err == nil {
			if _, known := ms.Nodes[caller]; !known {
				return nil, status.Errorf(codes.PermissionDenied, "node %s is not a member this node knows; its removal notice is not proof", caller)
			}
		}
	}
	rec := state.RemovalRecord{ClusterName: c.Name, By: req.GetRemovedBy(), As: req.GetRemovedAs(), ToldBy: caller}
	if t := req.GetRemovedAt(); t != nil {
		rec.At = t.AsTime()
	}
	first, frozen, destroyed := s.a.cfg.HA.Removed(ctx, rec)
	return &tandemv1.PeerNodeRemovedResponse{First: first, PrimariesFrozen: int32(frozen), VmsDestroyed: int32(destroyed)}, nil
}
