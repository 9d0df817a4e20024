package consensus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestVMRecords(t *testing.T) {
	m := checkedSM(t)
	at := time.Now()
	apply := func(c Command) error {
		c.At = at
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	m.s.Nodes["b"] = &NodeRecord{Name: "b", State: NodeMember}
	if err := apply(Command{Op: opVolumeCreate, Volume: &VolumeEntry{Name: "d1", Size: 1 << 30, Replicas: []string{"a", "b"}}}); err != nil {
		t.Fatal(err)
	}
	vm := VMRecord{Name: "web", UUID: "u1", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 128, Volumes: []string{"d1"}}}
	bad := vm
	bad.Spec.Volumes = []string{"nope"}
	if err := apply(Command{Op: opVMCreate, VM: &bad}); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("VM on a missing volume: %v", err)
	}
	if err := apply(Command{Op: opVMCreate, VM: &vm}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["web"]; got == nil || got.Desired != VMStopped {
		t.Fatalf("created: %+v", got)
	}
	// A retried create is idempotent; another VM of that name is refused.
	if err := apply(Command{Op: opVMCreate, VM: &vm}); err != nil {
		t.Fatalf("retried create: %v", err)
	}
	other := vm
	other.UUID = "u2"
	if err := apply(Command{Op: opVMCreate, VM: &other}); !errors.Is(err, ErrVMNameTaken) {
		t.Fatalf("duplicate name: %v", err)
	}
	// A volume is the disk of one VM only.
	other.Name = "db"
	if err := apply(Command{Op: opVMCreate, VM: &other}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("shared volume: %v", err)
	}
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Desired: VMStarted, Node: "a"}}); err != nil {
		t.Fatal(err)
	}
	// Conditional moves: only the mover that saw the VM on a wins.
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "b", IfNode: "b"}}); err == nil {
		t.Fatal("conditional update on the wrong node was accepted")
	}
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "b", IfNode: "a"}}); err != nil {
		t.Fatal(err)
	}
	// The same move again, as a retried proposal whose first attempt
	// committed: done, nothing changes (chaos finding 4). Another move
	// from a is still refused.
	changed := m.s.VMs["web"].Changed
	at = at.Add(time.Second)
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "b", IfNode: "a", Reason: "live migration"}}); err != nil {
		t.Fatalf("retried move: %v", err)
	}
	if got := m.s.VMs["web"]; got.Node != "b" || !got.Changed.Equal(changed) {
		t.Fatalf("a retried move changed the record: %+v", got)
	}
	m.s.Nodes["c"] = &NodeRecord{Name: "c", State: NodeMember}
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "c", IfNode: "a"}}); err == nil {
		t.Fatal("a move from a, where the VM no longer is, to another node was accepted")
	}
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "b", IfNode: "a", Desired: VMStopped}}); err == nil {
		t.Fatal("a conditional move that would also change the desired state was taken for a retry")
	}
	delete(m.s.Nodes, "c")
	if err := apply(Command{Op: opVMUpdate, VMUpdate: &VMUpdate{Name: "web", Node: "zz"}}); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("move to a non-member: %v", err)
	}
	if got := m.s.VMs["web"]; got.Node != "b" || got.Desired != VMStarted {
		t.Fatalf("after updates: %+v", got)
	}
	if err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "d1"}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("deleting a VM's disk: %v", err)
	}
	if err := apply(Command{Op: opMaintenance, Maintenance: &MaintenanceCmd{Node: "b", Enable: true}}); err != nil || !m.s.Nodes["b"].Maintenance {
		t.Fatalf("maintenance: %v", err)
	}
	if err := apply(Command{Op: opVMDelete, VMUpdate: &VMUpdate{Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opVMDelete, VMUpdate: &VMUpdate{Name: "web"}}); !errors.Is(err, ErrNoSuchVM) {
		t.Fatalf("delete twice: %v", err)
	}
}

// TestAuditedActionsAreEvents: an operator's action shows up in the event
// log too, numbered in order with HA's own events.
func TestAuditedActionsAreEvents(t *testing.T) {
	m := checkedSM(t)
	apply := func(c Command) {
		t.Helper()
		c.At, c.By = time.Now(), "a"
		if _, err := m.checkedApply(&c); err != nil {
			t.Fatal(err)
		}
	}
	apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}})
	apply(Command{Op: opEvent, Event: &Event{Kind: "node-dead", Node: "b"}})
	apply(Command{Op: opSetConfig, SetConfig: map[string]string{"resync.rate": "100M"}})
	var kinds []string
	for i, e := range m.s.Events {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, e.Seq)
		}
		kinds = append(kinds, e.Kind)
	}
	if got := fmt.Sprint(kinds); got != "[cluster-create node-dead config-set]" {
		t.Errorf("event kinds %s", got)
	}
	if last := m.s.Events[len(m.s.Events)-1]; last.By != "a" || !strings.Contains(last.Detail, "resync.rate") {
		t.Errorf("config event %+v", last)
	}
}
