package vmm

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestOurs: the run loop touches a VM only when the cluster wants it
// started here and this node serves every volume of it as primary.
func TestOurs(t *testing.T) {
	w := newWorld()
	w.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n1", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{Volumes: []string{"a", "b"}}}
	w.ms.VMs["away"] = &consensus.VMRecord{Name: "away", Node: "n2", Desired: consensus.VMStarted}
	w.ms.VMs["off"] = &consensus.VMRecord{Name: "off", Node: "n1", Desired: consensus.VMStopped}
	w.vols.local["a"] = &fakeLocal{serving: true}
	w.vols.local["b"] = &fakeLocal{serving: true}
	m := w.manager()
	for name, want := range map[string]bool{"web": true, "away": false, "off": false, "nosuch": false} {
		if got := m.ours(w.ms, name); got != want {
			t.Errorf("ours(%s) = %v, want %v", name, got, want)
		}
	}
	w.vols.local["b"].serving = false
	if m.ours(w.ms, "web") {
		t.Error("ours(web) with b not served as primary")
	}
	delete(w.vols.local, "b")
	if m.ours(w.ms, "web") {
		t.Error("ours(web) without a replica of b")
	}
	w.vols.local["b"] = &fakeLocal{serving: true}
	w.meta = nil // out of a cluster: volumes do not run
	if m.ours(w.ms, "web") {
		t.Error("ours(web) while volumes do not run")
	}
}

func TestWaitPrimary(t *testing.T) {
	w := newWorld()
	m := w.manager()
	w.vols.local["a"] = &fakeLocal{becomeAfter: 3}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m.waitPrimary(ctx, []string{"a"}); err != nil {
		t.Fatalf("becomes primary: %v", err)
	}

	w.vols.local["b"] = &fakeLocal{becomeAfter: -1, rec: &consensus.VolumeRecord{Primary: "n2", Epoch: 7}}
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := m.waitPrimary(ctx, []string{"a", "b"})
	if !isStatus(err, codes.FailedPrecondition, "n1 is not the primary of b (n2 is, epoch 7)") {
		t.Errorf("never primary: %v", err)
	}
	err = m.waitPrimary(t.Context(), []string{"c"})
	if !isStatus(err, codes.FailedPrecondition, "node n1 holds no replica of volume c") {
		t.Errorf("no replica: %v", err)
	}
	w.meta = nil // out of a cluster: volumes do not run
	err = m.waitPrimary(t.Context(), []string{"a"})
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "volumes are not running on this node" {
		t.Errorf("volumes off: %v", err)
	}
}

// TestVMStartRefusedWhenFenced: a self-fenced node starts nothing, before
// it even asks libvirt.
func TestVMStartRefusedWhenFenced(t *testing.T) {
	w := newWorld()
	w.fence.Set(w.now)
	_, err := w.manager().VMStart(t.Context(), &tandemv1.VMInfo{Name: "web"})
	if !isStatus(err, codes.FailedPrecondition, "fenced itself") {
		t.Errorf("got %v", err)
	}
	w.fence.Clear()
	// Compute is off in the test world: the next refusal is libvirt's.
	_, err = w.manager().VMStart(t.Context(), &tandemv1.VMInfo{Name: "web"})
	if !isStatus(err, codes.FailedPrecondition, "compute is off") {
		t.Errorf("unfenced: %v", err)
	}
}

func TestUsedMiB(t *testing.T) {
	ms := &consensus.MetaState{VMs: map[string]*consensus.VMRecord{
		"a": {Node: "n1", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{MemoryMiB: 512}},
		"b": {Node: "n1", Desired: consensus.VMStopped, Spec: consensus.VMSpecRecord{MemoryMiB: 1024}},
		"c": {Node: "n2", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{MemoryMiB: 2048}},
		"d": {Node: "n1", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{MemoryMiB: 256}},
	}}
	if got := usedMiB(ms, "n1"); got != 768 {
		t.Errorf("usedMiB(n1) = %d, want 768", got)
	}
}
