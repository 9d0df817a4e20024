package recovery

import (
	"slices"
	"testing"

	"github.com/tandemhci/tandem/consensus"
)

func TestRBDOnly(t *testing.T) {
	ms := &consensus.MetaState{Volumes: map[string]*consensus.VolumeEntry{
		"r1": {Name: "r1", Backend: consensus.BackendRBD},
		"r2": {Name: "r2", Backend: consensus.BackendRBD},
		"l1": {Name: "l1"},
	}}
	vm := func(vols ...string) *consensus.VMRecord {
		return &consensus.VMRecord{Spec: consensus.VMSpecRecord{Volumes: vols}}
	}
	if vols, ok := rbdOnly(ms, "n1", []*consensus.VMRecord{vm("r1"), vm("r2")}, 0); !ok || !slices.Equal(vols, []string{"r1", "r2"}) {
		t.Fatalf("all RBD: %v %v", vols, ok)
	}
	for name, tc := range map[string]struct {
		vms  []*consensus.VMRecord
		bare int
	}{
		"a replicated disk":         {[]*consensus.VMRecord{vm("r1", "l1")}, 0},
		"a bare replicated primary": {[]*consensus.VMRecord{vm("r1")}, 1},
		"no VM":                     {nil, 0},
		"an unknown volume":         {[]*consensus.VMRecord{vm("x")}, 0},
	} {
		if _, ok := rbdOnly(ms, "n1", tc.vms, tc.bare); ok {
			t.Errorf("%s: blocklist fencing applies", name)
		}
	}
}
