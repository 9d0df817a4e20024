package recovery

import (
	"context"
	"fmt"
	"strings"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
)

// RBDFencer blocklists, in Ceph, the clients of a dead node on the images
// of RBD volumes (issue 15). The daemon's Volumes has it; it is asserted,
// so Volumes and its fakes stay as they are.
type RBDFencer interface {
	// FenceRBD blocklists every client of node on vols' images and waits
	// for the OSD map that holds the entries (the monitors confirmed
	// them); it returns the addresses.
	FenceRBD(ctx context.Context, ms *consensus.MetaState, node string, vols []string) ([]string, error)
}

// rbdOnly lists the volumes of node's started VMs when every one of them
// is on RBD and node is primary of no replicated volume without a VM
// (those need power or lease fencing); ok false otherwise.
func rbdOnly(ms *consensus.MetaState, node string, vms []*consensus.VMRecord, bare int) (vols []string, ok bool) {
	if bare > 0 || len(vms) == 0 {
		return nil, false
	}
	for _, v := range vms {
		for _, vol := range v.Spec.Volumes {
			e, found := ms.Volumes[vol]
			if !found || !e.IsRBD() {
				return nil, false
			}
			vols = append(vols, vol)
		}
	}
	return vols, true
}

// rbdFence is the fencing by blocklist of a dead node whose VMs are all
// on RBD, when ha.rbd_blocklist_is_fence is on. It returns a confirmed
// result, or why it does not apply (a reason for the VMs' HA state).
func (m *Manager) rbdFence(ctx context.Context, ms *consensus.MetaState, node string, vms []*consensus.VMRecord, bare int) (fencing.Result, string) {
	vols, ok := rbdOnly(ms, node, vms, bare)
	if !ok {
		return fencing.Result{}, ""
	}
	if !ha.RBDBlocklistIsFence(m.settings(ms.Config)) {
		return fencing.Result{}, fmt.Sprintf("its VMs' disks are all on RBD, but %s is off: a Ceph blocklist does not count as fencing", ha.KeyRBDBlocklistIsFence)
	}
	f, ok := m.vols.(RBDFencer)
	if !ok {
		return fencing.Result{}, "this node cannot blocklist in Ceph"
	}
	addrs, err := f.FenceRBD(ctx, ms, node, vols)
	if err != nil {
		return fencing.Result{}, fmt.Sprintf("blocklisting its Ceph clients failed: %v", err)
	}
	m.event(ctx, consensus.Event{Kind: "rbd-blocklist", Node: node, Detail: fmt.Sprintf("clients of %s on %s blocklisted in Ceph, confirmed by the monitors: %s",
		node, strings.Join(vols, ", "), orNone(strings.Join(addrs, ", ")))})
	return fencing.Result{Agent: "rbd-blocklist", Confirmed: true,
		Detail: fmt.Sprintf("%s is on: its VMs' disks are all on RBD and its clients are blocklisted (%s); the VMs may still answer on their IPs until it is powered off", ha.KeyRBDBlocklistIsFence, orNone(strings.Join(addrs, ", ")))}, ""
}

func orNone(s string) string {
	if s == "" {
		return "none open"
	}
	return s
}
