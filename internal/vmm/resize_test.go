package vmm

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestResizeDisk: a replicated disk grows on its volume first, then the
// running VM's node makes QEMU see it; a stopped VM's disk only grows;
// a running VM's RBD disk is grown by its QEMU, then recorded; refusals
// change nothing.
func TestResizeDisk(t *testing.T) {
	world := func(running bool, rbd bool) *world {
		w := newWorld()
		e := &consensus.VolumeEntry{Name: "web-disk0", Size: 64 << 20}
		if rbd {
			e.Backend, e.Pool, e.Image = consensus.BackendRBD, "vms", "web-disk0"
		}
		w.ms.Volumes["web-disk0"] = e
		v := &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStopped, Spec: consensus.VMSpecRecord{Volumes: []string{"web-disk0"}}}
		if running {
			v.Desired = consensus.VMStarted
			w.running["web"] = "running"
		}
		w.ms.VMs["web"] = v
		return w
	}
	for _, tc := range []struct {
		name         string
		running, rbd bool
		want         []string
	}{
		{"running replicated", true, false, []string{"volume resize web-disk0 134217728", "peer n2 vm-resize-disk web web-disk0 134217728", "event vm-disk-resize web"}},
		{"stopped replicated", false, false, []string{"volume resize web-disk0 134217728", "event vm-disk-resize web"}},
		{"running RBD", true, true, []string{"peer n2 vm-resize-disk web web-disk0 rbd vms/web-disk0 134217728", "volume record-size web-disk0 134217728", "event vm-disk-resize web"}},
		{"stopped RBD", false, true, []string{"volume resize web-disk0 134217728", "event vm-disk-resize web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := world(tc.running, tc.rbd)
			if _, err := w.manager().ResizeDisk(t.Context(), &tandemv1.ResizeVMDiskRequest{Name: "web", Volume: "web-disk0", SizeBytes: 128 << 20}); err != nil {
				t.Fatal(err)
			}
			waitJournal(t, w, len(tc.want))
			if got := w.j.list(); !slices.Equal(got, tc.want) {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		req  *tandemv1.ResizeVMDiskRequest
		code codes.Code
		msg  string
	}{
		{"shrink", &tandemv1.ResizeVMDiskRequest{Name: "web", Volume: "web-disk0", SizeBytes: 32 << 20}, codes.InvalidArgument, "shrinking it to 33554432 would discard data"},
		{"not 4K", &tandemv1.ResizeVMDiskRequest{Name: "web", Volume: "web-disk0", SizeBytes: 128<<20 + 1}, codes.InvalidArgument, "multiple of 4 KiB"},
		{"not its disk", &tandemv1.ResizeVMDiskRequest{Name: "web", Volume: "db-disk0", SizeBytes: 128 << 20}, codes.InvalidArgument, `VM web has no disk on volume "db-disk0" (its disks: web-disk0)`},
		{"no VM", &tandemv1.ResizeVMDiskRequest{Name: "db", Volume: "web-disk0", SizeBytes: 128 << 20}, codes.NotFound, `no VM named "db"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := world(true, false)
			_, err := w.manager().ResizeDisk(t.Context(), tc.req)
			if !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 || w.ms.Volumes["web-disk0"].Size != 64<<20 {
				t.Errorf("a refused resize changed something: %q, size %d", got, w.ms.Volumes["web-disk0"].Size)
			}
		})
	}
}

// waitJournal waits until w's journal has n entries: events are recorded
// without holding up the caller.
func waitJournal(t *testing.T, w *world, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(w.j.list()) < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}
