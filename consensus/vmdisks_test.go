package consensus

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestVMDisks: vm-disks appends an existing volume no other VM uses,
// removes any disk but the first, and refuses the rest without changing
// anything.
func TestVMDisks(t *testing.T) {
	m, apply := bootstrapped(t, time.Now())
	for _, vol := range []string{"web-disk0", "web-disk1", "db-disk0", "spare"} {
		m.s.Volumes[vol] = &VolumeEntry{Name: vol, State: VolumeReady}
	}
	m.s.VMs["web"] = &VMRecord{Name: "web", Spec: VMSpecRecord{Volumes: []string{"web-disk0", "web-disk1"}}}
	m.s.VMs["db"] = &VMRecord{Name: "db", Spec: VMSpecRecord{Volumes: []string{"db-disk0"}}}
	for _, bad := range []VMDisksCmd{
		{VM: "web"},
		{VM: "web", Add: "spare", Remove: "web-disk1"},
		{VM: "web", Add: "db-disk0"},     // another VM's disk
		{VM: "web", Remove: "spare"},     // not the VM's
		{VM: "web", Remove: "web-disk0"}, // the boot disk
		{VM: "web", Remove: "db-disk0"},  // another VM's
	} {
		if err := apply(Command{Op: opVMDisks, VMDisks: &bad}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("vm-disks %+v: %v", bad, err)
		}
	}
	if err := apply(Command{Op: opVMDisks, VMDisks: &VMDisksCmd{VM: "web", Add: "missing"}}); !errors.Is(err, ErrNoSuchVolume) {
		t.Errorf("missing volume: %v", err)
	}
	if err := apply(Command{Op: opVMDisks, VMDisks: &VMDisksCmd{VM: "nope", Add: "spare"}}); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("missing VM: %v", err)
	}
	if got := m.s.VMs["web"].Spec.Volumes; !slices.Equal(got, []string{"web-disk0", "web-disk1"}) {
		t.Fatalf("refusals changed the disks: %v", got)
	}
	add := VMDisksCmd{VM: "web", Add: "spare"}
	if err := apply(Command{Op: opVMDisks, VMDisks: &add}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opVMDisks, VMDisks: &add}); err != nil {
		t.Fatalf("retried add: %v", err)
	}
	if got := m.s.VMs["web"].Spec.Volumes; !slices.Equal(got, []string{"web-disk0", "web-disk1", "spare"}) {
		t.Fatalf("after add: %v", got)
	}
	// A volume that is a VM's disk cannot be deleted; once detached it can.
	if err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "web-disk1"}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("deleting an attached disk: %v", err)
	}
	if err := apply(Command{Op: opVMDisks, VMDisks: &VMDisksCmd{VM: "web", Remove: "web-disk1"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"].Spec.Volumes; !slices.Equal(got, []string{"web-disk0", "spare"}) {
		t.Fatalf("after remove: %v", got)
	}
	if err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "web-disk1"}}); err != nil {
		t.Fatalf("deleting a detached disk: %v", err)
	}
	// The limit.
	full := &VMRecord{Name: "big", Spec: VMSpecRecord{}}
	for i := range MaxVMDisks {
		full.Spec.Volumes = append(full.Spec.Volumes, fmt.Sprintf("big-%d", i))
	}
	m.s.VMs["big"] = full
	m.s.Volumes["more"] = &VolumeEntry{Name: "more", State: VolumeReady}
	if err := apply(Command{Op: opVMDisks, VMDisks: &VMDisksCmd{VM: "big", Add: "more"}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("disk over the limit: %v", err)
	}
}
