package consensus

import (
	"errors"
	"testing"
	"time"
)

// TestVMSpecChanges: vm-spec changes only the fields given, refuses
// values out of bounds and unknown VMs, and leaves the record unchanged
// when it refuses.
func TestVMSpecChanges(t *testing.T) {
	at := time.Now()
	m, apply := bootstrapped(t, at)
	m.s.VMs["web"] = &VMRecord{Name: "web", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 192}}
	for _, bad := range []VMSpecCmd{{VM: "web", MemoryMiB: 32}, {VM: "web", VCPUs: 65}, {VM: "web", VCPUs: -1}, {VM: ""}} {
		if err := apply(Command{Op: opVMSpec, VMSpec: &bad}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("vm-spec %+v: %v", bad, err)
		}
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "db", VCPUs: 2}}); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("vm-spec of a missing VM: %v", err)
	}
	if err := apply(Command{Op: opVMSpec}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("vm-spec without body: %v", err)
	}
	if got := m.s.VMs["web"].Spec; got.VCPUs != 1 || got.MemoryMiB != 192 {
		t.Fatalf("refusals changed the spec: %+v", got)
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", MemoryMiB: 256}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"].Spec; got.VCPUs != 1 || got.MemoryMiB != 256 {
		t.Fatalf("memory only: %+v", got)
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", VCPUs: 2}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"]; got.Spec.VCPUs != 2 || got.Spec.MemoryMiB != 256 || !got.Changed.Equal(at) {
		t.Fatalf("vCPUs only: %+v", got)
	}
}

// bootstrapped is the state machine of a one-node cluster and a way to
// apply commands to it, each at time at.
func bootstrapped(t *testing.T, at time.Time) (*metaSM, func(Command) error) {
	t.Helper()
	m := checkedSM(t)
	apply := func(c Command) error {
		c.At = at
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	return m, apply
}

// TestVMSpecCPUModel: vm-spec sets the VM's own CPU model, "" returns it
// to the cluster's, nil leaves it; a name that is not one is refused and
// changes nothing. vm-create refuses a bad machine or model.
func TestVMSpecCPUModel(t *testing.T) {
	at := time.Now()
	m, apply := bootstrapped(t, at)
	m.s.VMs["web"] = &VMRecord{Name: "web", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 192, Machine: VMMachineQ35}}
	str := func(s string) *string { return &s }
	for _, bad := range []string{"qemu64 -enable-kvm", "a/b", "<x>", string(make([]byte, 65))} {
		if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", CPUModel: str(bad), MemoryMiB: 256}}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("cpu model %q: %v", bad, err)
		}
	}
	if got := m.s.VMs["web"].Spec; got.CPUModel != "" || got.MemoryMiB != 192 {
		t.Fatalf("refusals changed the spec: %+v", got)
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", CPUModel: str("Nehalem")}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"].Spec; got.CPUModel != "Nehalem" || got.Machine != VMMachineQ35 || got.VCPUs != 1 {
		t.Fatalf("cpu model set: %+v", got)
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", VCPUs: 2}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"].Spec; got.CPUModel != "Nehalem" || got.VCPUs != 2 {
		t.Fatalf("vCPUs only changed the model: %+v", got)
	}
	if err := apply(Command{Op: opVMSpec, VMSpec: &VMSpecCmd{VM: "web", CPUModel: str("")}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"].Spec; got.CPUModel != "" {
		t.Fatalf("back to the default: %+v", got)
	}
	for _, sp := range []VMSpecRecord{
		{VCPUs: 1, MemoryMiB: 64, Machine: "isapc"},
		{VCPUs: 1, MemoryMiB: 64, Machine: "q35", CPUModel: "bad model"},
	} {
		v := &VMRecord{Name: "db", UUID: "u", Spec: sp}
		if err := apply(Command{Op: opVMCreate, VM: v}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("vm-create %+v: %v", sp, err)
		}
	}
	if _, ok := m.s.VMs["db"]; ok {
		t.Fatal("a refused vm-create recorded the VM")
	}
	v := &VMRecord{Name: "db", UUID: "u", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 64, Machine: "pc", CPUModel: "Opteron_G5"}}
	if err := apply(Command{Op: opVMCreate, VM: v}); err != nil {
		t.Fatal(err)
	}
}
