package daemon

import (
	"context"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/vmm"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// newVMs wires the VM manager to the daemon; ctx is the node's lifetime.
func (d *Daemon) newVMs(ctx context.Context) *vmm.Manager {
	return vmm.New(vmm.Config{
		State:      d.st,
		Volumes:    d.vols,
		Meta:       d.vmMeta,
		Peers:      vmPeers{d},
		Images:     d.imgs,
		Secret:     d.dir.LoadClusterSecret,
		Background: ctx,
	})
}

// vmMeta is the metadata client for the VM manager: a nil interface, not
// a typed nil, while the node is not in a cluster.
func (d *Daemon) vmMeta() vmm.Meta {
	if _, m, _ := d.cluster(); m != nil {
		return m
	}
	return nil
}

// vmPeers is the peer pool as the VM manager calls it.
type vmPeers struct{ d *Daemon }

func (p vmPeers) Call(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	return p.d.callNode(ctx, ms, node, timeout, f)
}

// checkSetting is the cluster configuration's check of a value against
// the nodes (cluster.Config.CheckSetting): the VM manager's, once it runs.
func (d *Daemon) checkSetting(ctx context.Context, key, value string) error {
	if d.vms == nil {
		return nil
	}
	return d.vms.CheckSetting(ctx, key, value)
}
