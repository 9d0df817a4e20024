package vmm

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestRecoveryPlans: the plan of a node's loss places every VM, each
// restart counted before the next (memory), in recovery order, and lists
// for each the disks to promote on its target, so that recovery can
// promote all of them before it starts the first VM.
func TestRecoveryPlans(t *testing.T) {
	ms := &consensus.MetaState{
		Nodes: map[string]*consensus.NodeRecord{
			"n1": {Name: "n1", State: consensus.NodeMember},
			"n2": {Name: "n2", State: consensus.NodeMember},
			"n3": {Name: "n3", State: consensus.NodeMember},
		},
		Volumes: map[string]*consensus.VolumeEntry{},
		VMs:     map[string]*consensus.VMRecord{},
	}
	vols := map[string]*tandemv1.VolumeInfo{}
	up := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	// Three VMs of 600 MiB on n1, priorities 3, 2, 1; every disk has
	// UpToDate replicas on n1, n2 and n3; vm-c's disk already has its
	// primary on n3.
	for i, name := range []string{"vm-a", "vm-b", "vm-c"} {
		disk := name + "-disk0"
		ms.Volumes[disk] = &consensus.VolumeEntry{Name: disk, State: consensus.VolumeReady, Replicas: []string{"n1", "n2", "n3"}}
		ms.VMs[name] = &consensus.VMRecord{Name: name, Node: "n1", Desired: consensus.VMStarted, Priority: 3 - i,
			Spec: consensus.VMSpecRecord{MemoryMiB: 600, Volumes: []string{disk}}}
		primary := "n1"
		if name == "vm-c" {
			primary = "n3"
		}
		vols[disk] = &tandemv1.VolumeInfo{Name: disk, Primary: primary, Replicas: []*tandemv1.VolumeReplica{
			{Node: "n1", State: up}, {Node: "n2", State: up}, {Node: "n3", State: up}}}
	}
	// n2 has room for two of them (1300 MiB), n3 for one (1000 MiB).
	compute := map[string]*tandemv1.ComputeStatus{
		"n2": {Available: true, CapacityMib: 1300},
		"n3": {Available: true, CapacityMib: 1000},
	}
	cv := &ClusterView{Meta: ms, Volumes: vols, Placement: PlacementCluster(ms, compute, vols)}
	plans := recoveryPlans(cv, "n1")
	var got []string
	for _, p := range plans {
		got = append(got, fmt.Sprintf("%s->%s promote %v", p.VM.Name, p.Node, p.Promote))
	}
	t.Logf("plans: %v", got)
	if len(plans) != 3 {
		t.Fatalf("planned %d VMs, want 3: %v", len(plans), got)
	}
	if plans[0].VM.Name != "vm-a" || plans[1].VM.Name != "vm-b" || plans[2].VM.Name != "vm-c" {
		t.Fatalf("plans not in priority order: %v", got)
	}
	perNode := map[string]int{}
	for _, p := range plans {
		perNode[p.Node] += p.VM.Spec.MemoryMiB
		want := []string{p.VM.Spec.Volumes[0]}
		if vols[p.VM.Spec.Volumes[0]].Primary == p.Node {
			want = nil
		}
		if !slices.Equal(p.Promote, want) {
			t.Errorf("%s on %s: promote %v, want %v", p.VM.Name, p.Node, p.Promote, want)
		}
	}
	if perNode["n2"] > 1300 || perNode["n3"] > 1000 {
		t.Fatalf("the plan overcommits a node (each restart not counted before the next): %v", perNode)
	}
}
