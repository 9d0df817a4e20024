package api

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// guestAgentService is the admin GuestAgent API (issue 18), served by the
// VM manager through the node running the VM.
type guestAgentService struct {
	tandemv1.UnimplementedGuestAgentServer
	a *Services
}

func (s *guestAgentService) FSFreeze(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.FSFreezeResponse, error) {
	return answer(s.a.cfg.VMs.FSFreeze(ctx, req))
}

func (s *guestAgentService) FSThaw(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.FSFreezeResponse, error) {
	return answer(s.a.cfg.VMs.FSThaw(ctx, req))
}

func (s *peerService) VMGuestAgent(ctx context.Context, req *tandemv1.PeerGuestAgentRequest) (*tandemv1.PeerGuestAgentResponse, error) {
	return answer(s.a.cfg.VMs.VMGuestAgent(ctx, req))
}
