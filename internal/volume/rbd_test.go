package volume

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/cephholders"
)

func TestNodeAt(t *testing.T) {
	ms := &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{
		"n1": {Name: "n1", BackendAddr: "10.99.0.11"},
		"n2": {Name: "n2", BackendAddr: "10.99.0.12:7400"},
	}}
	for addr, want := range map[string]string{
		"10.99.0.11:0/3821": "n1",
		"10.99.0.12:0/77":   "n2",
		"10.99.0.13:0/1":    "",
		"":                  "",
	} {
		if got := nodeAt(ms, addr); got != want {
			t.Errorf("nodeAt(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestPickStorage(t *testing.T) {
	ms := &consensus.MetaState{Storage: map[string]*consensus.StorageRecord{}}
	if _, err := pickStorage(ms, ""); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("none configured: %v", err)
	}
	ms.Storage["a"] = &consensus.StorageRecord{Name: "a"}
	if st, err := pickStorage(ms, ""); err != nil || st.Name != "a" {
		t.Errorf("the only one: %v %v", st, err)
	}
	ms.Storage["b"] = &consensus.StorageRecord{Name: "b"}
	if _, err := pickStorage(ms, ""); status.Code(err) != codes.InvalidArgument {
		t.Errorf("two, none named: %v", err)
	}
	if st, err := pickStorage(ms, "b"); err != nil || st.Name != "b" {
		t.Errorf("named: %v %v", st, err)
	}
	if _, err := pickStorage(ms, "c"); status.Code(err) != codes.NotFound {
		t.Errorf("unknown: %v", err)
	}
}

// TestHoldsNone: only the QEMU of a VM none of whose disks was fenced is
// left out of the processes an unblocklist waits for.
func TestHoldsNone(t *testing.T) {
	ms := &consensus.MetaState{VMs: map[string]*consensus.VMRecord{
		"a": {Name: "a", UUID: "11111111-2222-3333-4444-555555555555", Spec: consensus.VMSpecRecord{Volumes: []string{"a-disk"}}},
		"b": {Name: "b", UUID: "66666666-2222-3333-4444-555555555555", Spec: consensus.VMSpecRecord{Volumes: []string{"b-disk", "shared"}}},
	}}
	fenced := map[string]bool{"b-disk": true}
	qemu := func(uuid string) cephholders.Proc {
		return cephholders.Proc{PID: 7, Comm: "qemu-system-x86", Cmdline: []string{"/usr/bin/qemu-system-x86_64", "-name", "guest=x", "-uuid", uuid}}
	}
	for _, c := range []struct {
		p    cephholders.Proc
		want bool
	}{
		{qemu("11111111-2222-3333-4444-555555555555"), true},  // a's disks were not fenced
		{qemu(strings.ToUpper("11111111-2222-3333-4444-555555555555")), true},
		{qemu("66666666-2222-3333-4444-555555555555"), false}, // b's disk was
		{qemu("99999999-2222-3333-4444-555555555555"), false}, // no such VM: a stale QEMU
		{cephholders.Proc{PID: 8, Comm: "qemu-io", Cmdline: []string{"qemu-io", "-uuid", "11111111-2222-3333-4444-555555555555"}}, false},
		{cephholders.Proc{PID: 9, Comm: "rbd", Cmdline: []string{"rbd", "map"}}, false},
		{cephholders.Proc{PID: 10, Comm: "x"}, false},
	} {
		if got := holdsNone(ms, c.p, fenced); got != c.want {
			t.Errorf("holdsNone(%v) = %v, want %v", c.p.Cmdline, got, c.want)
		}
	}
}
