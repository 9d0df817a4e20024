package recovery

import (
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
)

// TestHAVM: a VM's HA state follows its desired state unless recovery is
// or was at work, and unset times stay unset.
func TestHAVM(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name             string
		desired, haState string
		changed          time.Time
		want             string
	}{
		{"never started, stopped", consensus.VMStopped, "", time.Time{}, "stopped"},
		{"disabled", consensus.VMDisabled, "", time.Time{}, "disabled"},
		{"started", consensus.VMStarted, "", time.Time{}, "started"},
		{"recovered then stopped", consensus.VMStopped, consensus.HAStarted, at, "stopped"},
		{"recovered and running", consensus.VMStarted, consensus.HAStarted, at, "started"},
		{"fencing", consensus.VMStarted, consensus.HAFence, at, "fence"},
		{"error stays visible when stopped", consensus.VMStopped, consensus.HAError, at, "error"},
		{"recovery of a disabled VM", consensus.VMDisabled, consensus.HARecovery, at, "recovery"},
	} {
		v := &consensus.VMRecord{Name: "vm", Node: "n1", Desired: tt.desired, HAState: tt.haState, HAChanged: tt.changed}
		got := HAVM(v)
		if got.HaState != tt.want || got.Desired != tt.desired || got.Name != "vm" || got.Node != "n1" {
			t.Errorf("%s: %v, want HA state %s", tt.name, got, tt.want)
		}
		if tt.changed.IsZero() != (got.Changed == nil) || (got.Changed != nil && !got.Changed.AsTime().Equal(tt.changed)) {
			t.Errorf("%s: changed %v, want %v (nil when unset)", tt.name, got.Changed, tt.changed)
		}
	}
	vms := HAVMs(map[string]*consensus.VMRecord{"b": {Name: "b", Desired: consensus.VMStopped}, "a": {Name: "a", Desired: consensus.VMStarted}})
	if len(vms) != 2 || vms[0].Name != "a" || vms[1].HaState != "stopped" {
		t.Errorf("HAVMs: %v", vms)
	}
	if optTimestamp(time.Time{}) != nil || !optTimestamp(at).AsTime().Equal(at) {
		t.Error("optTimestamp")
	}
}
