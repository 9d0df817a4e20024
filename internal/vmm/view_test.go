package vmm

import (
	"maps"
	"slices"
	"testing"

	"github.com/tandemhci/tandem/consensus"
)

// TestVMDisksOnly: View asks only the volumes that are a disk of some VM
// (and exist); a thousand bare volumes are not asked at every placement.
func TestVMDisksOnly(t *testing.T) {
	ms := &consensus.MetaState{Volumes: map[string]*consensus.VolumeEntry{}, VMs: map[string]*consensus.VMRecord{
		"a": {Name: "a", Spec: consensus.VMSpecRecord{Volumes: []string{"a0", "a1"}}},
		"b": {Name: "b", Spec: consensus.VMSpecRecord{Volumes: []string{"b0", "gone"}}},
	}}
	for _, v := range []string{"a0", "a1", "b0", "bare1", "bare2"} {
		ms.Volumes[v] = &consensus.VolumeEntry{Name: v}
	}
	if got := slices.Sorted(maps.Keys(vmDisks(ms))); !slices.Equal(got, []string{"a0", "a1", "b0"}) {
		t.Fatalf("asked %v, want the VMs' existing disks a0 a1 b0", got)
	}
}
