package daemon

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// FenceConfig records a node's fencing agents; internal/recovery checks them.
func (s *nodeService) FenceConfig(ctx context.Context, req *tandemv1.FenceConfigRequest) (*tandemv1.FenceConfigResponse, error) {
	return s.d.ha.FenceConfig(ctx, req)
}

// Fence runs the node's agents now, or records an operator's word that
// the node is off (which lets a waiting recovery proceed).
func (s *nodeService) Fence(ctx context.Context, req *tandemv1.FenceNodeRequest) (*tandemv1.FenceNodeResponse, error) {
	return s.d.ha.Fence(ctx, req)
}
