package api

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

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
		s.a.cfg.HA.LeaderPing(req.From, req.LeaderTerm)
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

// HALiveness answers from this node's detector (the leader's).
func (s *peerService) HALiveness(_ context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return answer(s.a.cfg.HA.Liveness())
}
