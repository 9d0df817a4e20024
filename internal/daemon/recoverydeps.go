package daemon

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/recovery"
	"github.com/tandemhci/tandem/internal/vmm"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// newRecovery wires HA recovery to the daemon.
func (d *Daemon) newRecovery() *recovery.Manager {
	return recovery.New(recovery.Config{
		State:    d.st,
		Meta:     d.recoveryMeta,
		Volumes:  recoveryVolumes{d: d},
		VMs:      recoveryVMs{d: d},
		Settings: d.st.Settings.Of,
		// Read at each use, so a secret copied in by hand (a node that
		// predates cluster secrets) works without a restart.
		Secret: d.dir.LoadClusterSecret,
		KillQEMU: func(ctx context.Context) ([]string, error) {
			// Self-fence kills every VM of this host.
			return compute.KillHostQEMU(ctx, func(string) bool { return true })
		},
	})
}

// recoveryMeta is recovery.Meta over the running metadata client; a nil
// interface (never a typed nil) while the node is not in a cluster.
func (d *Daemon) recoveryMeta() recovery.Meta {
	id, m, _ := d.cluster()
	if id == nil || m == nil {
		return nil
	}
	return recoveryMeta{self: id.ReplicaID, m: m}
}

type recoveryMeta struct {
	self uint64
	m    *consensus.Meta
}

func (r recoveryMeta) LocalState() (*consensus.MetaState, error) { return r.m.LocalState() }
func (r recoveryMeta) Self() uint64                              { return r.self }

func (r recoveryMeta) Leader() (uint64, uint64, bool) {
	return r.m.Host().Leader(consensus.MetaShardID)
}

func (r recoveryMeta) CheckQuorum(ctx context.Context) error {
	return r.m.Host().CheckQuorum(ctx, consensus.MetaShardID)
}

func (r recoveryMeta) SetVMHA(ctx context.Context, c consensus.VMHACmd) error {
	_, err := r.m.SetVMHA(ctx, c)
	return err
}

func (r recoveryMeta) UpdateVM(ctx context.Context, u consensus.VMUpdate) error {
	_, err := r.m.UpdateVM(ctx, u)
	return err
}

func (r recoveryMeta) SetConfig(ctx context.Context, kv map[string]string) error {
	return r.m.SetConfig(ctx, kv)
}

func (r recoveryMeta) SetNodeFence(ctx context.Context, c consensus.NodeFenceCmd) (consensus.NodeRecord, error) {
	return r.m.SetNodeFence(ctx, c)
}

// recoveryVolumes is recovery.Volumes over the volume manager.
type recoveryVolumes struct{ d *Daemon }

func (r recoveryVolumes) FreezeAll(cause error) int {
	if vm := r.d.volumes(); vm != nil {
		return vm.FreezeAll(cause)
	}
	return 0
}

func (r recoveryVolumes) Primaries() int {
	if vm := r.d.volumes(); vm != nil {
		return vm.Primaries()
	}
	return 0
}

func (r recoveryVolumes) Show(ctx context.Context, vol, skip string) (*tandemv1.VolumeInfo, error) {
	vm := r.d.volumes()
	if vm == nil {
		return nil, fmt.Errorf("volumes are not running on this node")
	}
	if skip == "" {
		return vm.Show(ctx, vol, 5*time.Second)
	}
	return vm.Show(ctx, vol, 5*time.Second, skip)
}

func (r recoveryVolumes) WakeShards(node string) int {
	if vm := r.d.volumes(); vm != nil {
		return vm.WakeShardsOf(node)
	}
	return 0
}

func (r recoveryVolumes) Promote(ctx context.Context, ms *consensus.MetaState, vol, node string) error {
	return r.d.callNode(ctx, ms, node, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumePromote(ctx, &tandemv1.PromoteVolumeRequest{Name: vol, Node: node, Reason: "HA recovery"})
		return err
	})
}

// recoveryVMs is recovery.VMs over the compute manager and the VM service.
type recoveryVMs struct{ d *Daemon }

func (r recoveryVMs) Domains(ctx context.Context) (recovery.Domains, error) {
	drv, err := r.d.vms.Driver(ctx)
	if err != nil {
		return nil, err
	}
	return drv, nil
}

func (r recoveryVMs) Place(ctx context.Context, name, dead string) (recovery.Placement, error) {
	p, err := r.d.vms.PlanRestart(ctx, name, dead)
	return recovery.Placement(p), err
}

func (r recoveryVMs) PlanAll(ctx context.Context, dead string) ([]recovery.Placement, error) {
	plans, err := r.d.vms.PlanRecovery(ctx, dead)
	out := make([]recovery.Placement, 0, len(plans))
	for _, p := range plans {
		out = append(out, recovery.Placement(p))
	}
	return out, err
}

func (r recoveryVMs) RunningOn(ctx context.Context, ms *consensus.MetaState, vm string) (running, unknown []string, err error) {
	rec := ms.VMs[vm]
	if rec == nil {
		return nil, nil, fmt.Errorf("no VM named %q", vm)
	}
	info := vmm.VMInfoOf(rec)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for name, n := range ms.Nodes {
		if n.State != consensus.NodeMember || n.Role == "witness" {
			continue
		}
		wg.Go(func() {
			var st string
			err := r.d.callNode(ctx, ms, name, 10*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
				out, err := c.VMState(ctx, &tandemv1.PeerVMRequest{Vm: info})
				st = out.GetState()
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil || st == "unknown":
				unknown = append(unknown, name)
			case st == "running" || st == "blocked" || st == "paused" || st == "shutting-down" || st == "pm-suspended":
				running = append(running, name) // a QEMU process exists
			}
		})
	}
	wg.Wait()
	sort.Strings(running)
	sort.Strings(unknown)
	return running, unknown, nil
}

func (r recoveryVMs) Start(ctx context.Context, p recovery.Placement) error {
	return r.d.callNode(ctx, p.State, p.Node, 60*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VMStart(ctx, &tandemv1.PeerVMRequest{Vm: vmm.VMInfoOf(p.VM)})
		return err
	})
}

func (r recoveryMeta) AppliedIndex() (uint64, error) { return r.m.AppliedIndex() }
