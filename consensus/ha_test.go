package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEffectiveHAState(t *testing.T) {
	cases := []struct{ desired, ha, want string }{
		{VMStarted, "", HAStarted},
		{VMStopped, "", VMStopped},
		{VMDisabled, HAStarted, VMDisabled},
		{VMStarted, HARecovery, HARecovery},
		{VMStopped, HAError, HAError},
		{VMStarted, HAFence, HAFence},
	}
	for _, c := range cases {
		v := &VMRecord{Desired: c.desired, HAState: c.ha}
		if got := v.EffectiveHAState(); got != c.want {
			t.Errorf("desired %s, HA %q: %q, want %q", c.desired, c.ha, got, c.want)
		}
	}
}

// A conditional HA move applies only while the VM is in the state and on
// the node its writer saw: a recovery of a dead node must not overwrite
// what another path decided for a VM it moved meanwhile (seed 7174).
func TestVMHAConditions(t *testing.T) {
	m, apply := bootstrapped(t, time.Now())
	m.s.Nodes["b"] = &NodeRecord{Name: "b", State: NodeMember}
	if err := apply(Command{Op: opVMCreate, VM: &VMRecord{Name: "web", UUID: "u1", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 128}}}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Desired: VMStarted, Node: "a"}}); err != nil {
		t.Fatal(err)
	}
	ha := func(h VMHACmd) error { return apply(Command{Op: opVMHA, VMHA: &h}) }
	if err := ha(VMHACmd{Name: "web", State: HAFence, IfNode: "a", IfState: HAStarted}); err != nil {
		t.Fatalf("conditions that hold: %v", err)
	}
	if err := ha(VMHACmd{Name: "web", State: HAError, IfNode: "b"}); !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "recorded on a, not b") {
		t.Fatalf("wrong node: %v", err)
	}
	if err := ha(VMHACmd{Name: "web", State: HAError, IfState: HARecovery}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("wrong state: %v", err)
	}
	if got := m.s.VMs["web"].HAState; got != HAFence {
		t.Fatalf("HA state %q after refused moves, want %q", got, HAFence)
	}
}
