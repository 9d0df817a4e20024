package daemon

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// haService is the admin HA API; internal/recovery holds its logic.
type haService struct {
	tandemv1.UnimplementedHAServer
	d *Daemon
}

func (s *haService) Status(ctx context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return s.d.ha.Status(ctx)
}

func (s *haService) Arm(ctx context.Context, req *tandemv1.HAArmRequest) (*tandemv1.HAStatusResponse, error) {
	return s.d.ha.Arm(ctx, req.Armed)
}

func (s *haService) Events(req *tandemv1.EventsRequest, stream tandemv1.HA_EventsServer) error {
	return s.d.ha.Events(stream.Context(), req, stream.Send)
}

// HALiveness answers from this node's detector (the leader's).
func (s *peerService) HALiveness(_ context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return s.d.ha.Liveness()
}
