package testcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tandemhci/tandem/internal/faultfs"
)

// TestFaultDisk: a node's fault disk is visible to processes started in
// its namespace, faults reach them, a power loss drops what they did not
// sync, and Close leaves no mount behind.
func TestFaultDisk(t *testing.T) {
	Require(t)
	var mnt string
	t.Cleanup(func() { // runs after the cluster's Close
		if mnt == "" {
			return
		}
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), " "+mnt+" ") {
			t.Errorf("%s still mounted after Close", mnt)
		}
	})
	c := New(t, Options{Nodes: 1})
	n := c.Node("n1")
	td := NewTandem(c, "")
	f, err := td.FaultDisk(n, "volumes")
	if err != nil {
		t.Fatal(err)
	}
	mnt = f.Mountpoint()
	if want := filepath.Join(td.DataDir(n), "volumes"); mnt != want {
		t.Fatalf("mounted at %s, want %s", mnt, want)
	}
	if _, err := td.FaultDisk(n, "../escape"); err == nil {
		t.Error("FaultDisk outside the data directory accepted")
	}

	ctx := context.Background()
	sh := func(script string) ([]byte, error) {
		return c.Exec(ctx, n, "sh", "-c", "cd "+mnt+" && "+script)
	}
	if out, err := sh("printf synced | dd of=s conv=fsync status=none && printf lost > u"); err != nil {
		t.Fatalf("writing from the node: %v: %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(f.Backing(), "s")); err != nil || string(b) != "synced" {
		t.Fatalf("synced file in the backing directory: %q, %v", b, err)
	}

	if err := f.SetFault(faultfs.Fault{Ops: faultfs.OpWrite, Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	out, err := sh("printf x > e")
	if err == nil || !strings.Contains(string(out), "I/O error") {
		t.Fatalf("write under an EIO fault from the node: %v: %s", err, out)
	}
	f.Clear()

	f.PowerLoss()
	if b, err := os.ReadFile(filepath.Join(mnt, "u")); err != nil || len(b) != 0 {
		t.Fatalf("unsynced file after power loss: %q, %v; want it empty", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "s")); err != nil || string(b) != "synced" {
		t.Fatalf("synced file after power loss: %q, %v", b, err)
	}
}
