package vmm

import (
	"reflect"
	"testing"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/placement"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestPlacementCluster checks the adapter from metadata, compute statuses
// and volume infos to placement's input.
func TestPlacementCluster(t *testing.T) {
	ms := &consensus.MetaState{
		Nodes: map[string]*consensus.NodeRecord{
			"n2": {Name: "n2", State: consensus.NodeMember, Maintenance: true},
			"n1": {Name: "n1", State: consensus.NodeMember},
			"j":  {Name: "j", State: consensus.NodeJoining},
			"w":  {Name: "w", State: consensus.NodeMember, Role: "witness"},
			"n3": {Name: "n3", State: consensus.NodeMember},
		},
		VMs: map[string]*consensus.VMRecord{
			"b": {Name: "b", Node: "n1", Desired: consensus.VMStarted, Priority: 3, AntiAffinity: "g", HAState: consensus.HAError, EvacuatedFrom: "n2",
				Spec: consensus.VMSpecRecord{MemoryMiB: 512, Volumes: []string{"b-disk0", "b-disk1"}}},
			"a": {Name: "a", Desired: consensus.VMStopped, Spec: consensus.VMSpecRecord{MemoryMiB: 64}},
		},
	}
	compute := map[string]*tandemv1.ComputeStatus{
		"n1": {Available: true, CapacityMib: 4096, UsedMib: 999},
		"n2": {Available: true, CapacityMib: 2048},
		"n3": {Available: false, CapacityMib: 8192},
	}
	vols := map[string]*tandemv1.VolumeInfo{
		"b-disk0": {Replicas: []*tandemv1.VolumeReplica{
			{Node: "n1", State: tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE},
			{Node: "n2", State: tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE},
			{Node: "n3", State: tandemv1.ReplicaState_REPLICA_STATE_OUTDATED},
		}},
		"gone": nil,
	}
	got := PlacementCluster(ms, compute, vols)
	want := placement.Cluster{
		Nodes: []placement.Node{
			{Name: "j"},
			{Name: "n1", Member: true, Up: true, CapacityMiB: 4096},
			{Name: "n2", Member: true, Maintenance: true, Up: true, CapacityMiB: 2048},
			{Name: "n3", Member: true},
			{Name: "w", Member: true, Witness: true},
		},
		VMs: []placement.VM{
			{Name: "a", MemoryMiB: 64},
			{Name: "b", MemoryMiB: 512, Priority: 3, AntiAffinity: "g", Volumes: []string{"b-disk0", "b-disk1"}, Node: "n1", Started: true, HAError: true, EvacuatedFrom: "n2"},
		},
		Replicas: map[string]map[string]placement.Replica{
			"b-disk0": {"n1": placement.UpToDate, "n2": placement.SyncSource, "n3": placement.Outdated},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PlacementCluster:\n got %+v\nwant %+v", got, want)
	}
	if r := placement.CanHost(&got, got.VMs[1], "n1"); r != "holds no replica of volume b-disk1" {
		t.Errorf("CanHost(b, n1) = %q", r)
	}
}
