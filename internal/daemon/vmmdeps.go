package daemon

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/vmm"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// newVMs wires the VM manager to the daemon; ctx is the node's lifetime.
func (d *Daemon) newVMs(ctx context.Context) *vmm.Manager {
	return vmm.New(vmm.Config{
		State:      d.st,
		Volumes:    vmVolumes{d},
		Meta:       d.vmMeta,
		Peers:      vmPeers{d},
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

// vmVolumes is the volume subsystem as the VM manager sees it.
type vmVolumes struct{ d *Daemon }

func (v vmVolumes) Catalog(ctx context.Context, fresh bool) (*consensus.MetaState, error) {
	return v.d.vols.Catalog(ctx, fresh)
}

func (v vmVolumes) Create(ctx context.Context, req *tandemv1.CreateVolumeRequest) error {
	_, err := v.d.vols.Create(ctx, req)
	return err
}

func (v vmVolumes) Delete(ctx context.Context, name string) error {
	_, err := v.d.vols.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: name})
	return err
}

func (v vmVolumes) Place(ctx context.Context, ms *consensus.MetaState, size int64, replicas int) ([]string, error) {
	nodes, _, err := v.d.vols.Place(ctx, ms, size, replicas, nil)
	return nodes, err
}

func (v vmVolumes) Show(ctx context.Context, name string, timeout time.Duration) (*tandemv1.VolumeInfo, error) {
	return v.d.vols.Show(ctx, name, timeout)
}

func (v vmVolumes) NBDSocket() string { return v.d.dir.NBDSocket() }

func (v vmVolumes) Local(name string) (vmm.LocalVolume, error) {
	m := v.d.volumes()
	if m == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	if !m.Holds(name) {
		return nil, nil
	}
	return localVolume{m, name}, nil
}

// localVolume is one of this node's replicas as the VM manager uses it.
type localVolume struct {
	m    *volume.Manager
	name string
}

func (l localVolume) ServingPrimary() bool            { return l.m.ServingPrimary(l.name) }
func (l localVolume) Reconcile()                      { l.m.Reconcile(l.name) }
func (l localVolume) Record() *consensus.VolumeRecord { return l.m.Record(l.name) }

func (l localVolume) AllowDual(ctx context.Context, target string) error {
	if err := l.m.AllowDual(ctx, l.name, target); err != nil {
		return apierr.From(fmt.Errorf("volume %s: %w", l.name, err))
	}
	return nil
}

func (l localVolume) EndDual(ctx context.Context, reason string) error {
	return l.m.EndDual(ctx, l.name, reason)
}

func (l localVolume) Handover(ctx context.Context, target string) error {
	return l.m.Handover(ctx, l.name, target)
}
