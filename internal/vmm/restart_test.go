package vmm

import (
	"testing"

	"github.com/tandemhci/tandem/consensus"
)

// A node's local metadata may be stale (it was just powered on): a VM it
// places here is restarted or resumed only if a read with quorum agrees
// (vmm.confirmer; e2e TestRBDHAFailover ran a VM twice without it).
func TestCrashRestartConfirmedWithQuorum(t *testing.T) {
	rbdVM := func(node string) *consensus.MetaState {
		return &consensus.MetaState{
			Volumes: map[string]*consensus.VolumeEntry{"hr-disk0": {Name: "hr-disk0", Backend: consensus.BackendRBD, Owner: node}},
			VMs: map[string]*consensus.VMRecord{"hr": {Name: "hr", Node: node, Desired: consensus.VMStarted,
				Spec: consensus.VMSpecRecord{Volumes: []string{"hr-disk0"}}}},
		}
	}
	for _, tc := range []struct {
		name    string
		fresh   *consensus.MetaState
		quorate bool
		want    bool
	}{
		{"fresh agrees", nil, true, true},
		{"HA moved it elsewhere meanwhile", rbdVM("n2"), true, false},
		{"no quorum", nil, false, false},
		{"in recovery", func() *consensus.MetaState { ms := rbdVM("n1"); ms.VMs["hr"].HAState = consensus.HARecovery; return ms }(), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			w.ms = rbdVM("n1") // this node's copy: the VM runs here
			w.freshMS, w.quorate = tc.fresh, tc.quorate
			m := w.manager()
			if !m.ours(w.ms, "hr") {
				t.Fatal("the local copy should place hr here")
			}
			if got := m.confirmer(t.Context())("hr"); got != tc.want {
				t.Fatalf("confirmed %v, want %v", got, tc.want)
			}
		})
	}
}
