package consensus

import (
	"errors"
	"testing"
	"time"
)

// TestVMNICs: vm-nics appends a NIC with a MAC no VM uses, removes one by
// MAC, and refuses the rest without changing anything.
func TestVMNICs(t *testing.T) {
	m, apply := bootstrapped(t, time.Now())
	m.s.VMs["web"] = &VMRecord{Name: "web", Spec: VMSpecRecord{NICs: []VMNIC{{MAC: "52:54:00:00:00:01"}}}}
	m.s.VMs["db"] = &VMRecord{Name: "db", Spec: VMSpecRecord{NICs: []VMNIC{{MAC: "52:54:00:00:00:09"}}}}
	for _, bad := range []VMNICsCmd{
		{VM: "web"},
		{VM: "web", Add: &VMNIC{MAC: "52:54:00:00:00:02"}, RemoveMAC: "52:54:00:00:00:01"},
		{VM: "web", Add: &VMNIC{}},
		{VM: "web", Add: &VMNIC{MAC: "52:54:00:00:00:09"}},
		{VM: "web", RemoveMAC: "52:54:00:00:00:07"},
	} {
		if err := apply(Command{Op: opVMNICs, VMNICs: &bad}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("vm-nics %+v: %v", bad, err)
		}
	}
	if err := apply(Command{Op: opVMNICs, VMNICs: &VMNICsCmd{VM: "nope", RemoveMAC: "52:54:00:00:00:01"}}); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("missing VM: %v", err)
	}
	if n := m.s.VMs["web"].Spec.NICs; len(n) != 1 {
		t.Fatalf("refusals changed the NICs: %+v", n)
	}
	add := VMNICsCmd{VM: "web", Add: &VMNIC{Bridge: "vmbr1", MAC: "52:54:00:00:00:0A"}}
	if err := apply(Command{Op: opVMNICs, VMNICs: &add}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opVMNICs, VMNICs: &add}); err != nil {
		t.Fatalf("retried add: %v", err)
	}
	if n := m.s.VMs["web"].Spec.NICs; len(n) != 2 || n[1].MAC != "52:54:00:00:00:0a" || n[1].Bridge != "vmbr1" {
		t.Fatalf("after add: %+v", n)
	}
	if err := apply(Command{Op: opVMNICs, VMNICs: &VMNICsCmd{VM: "web", RemoveMAC: "52:54:00:00:00:01"}}); err != nil {
		t.Fatal(err)
	}
	if n := m.s.VMs["web"].Spec.NICs; len(n) != 1 || n[0].MAC != "52:54:00:00:00:0a" {
		t.Fatalf("after remove: %+v", n)
	}
}
