package daemon

import (
	"context"
	"fmt"

	"github.com/tandemhci/tandem/consensus"
)

// FenceRBD is recovery.RBDFencer over the volume subsystem.
func (r recoveryVolumes) FenceRBD(ctx context.Context, ms *consensus.MetaState, node string, vols []string) ([]string, error) {
	vm := r.d.volumes()
	if vm == nil {
		return nil, fmt.Errorf("volumes are not running on this node")
	}
	return vm.FenceRBD(ctx, ms, node, vols)
}
