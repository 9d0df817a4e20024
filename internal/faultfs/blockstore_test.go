package faultfs_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/faultfs"
)

// mountFS mounts a faultfs over a fresh backing directory for t.
func mountFS(t *testing.T) *faultfs.FS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faultfs needs root (mount(2))")
	}
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := faultfs.Mount(context.Background(), backing, mnt, faultfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return f
}

const volSize = 8 << 20

func createVolume(t *testing.T, f *faultfs.FS) (string, *blockstore.LocalVolume) {
	t.Helper()
	p := filepath.Join(f.Mountpoint(), "vol.img")
	if err := blockstore.Create(p, volSize, blockstore.CreateOptions{}); err != nil {
		t.Fatalf("blockstore.Create on faultfs: %v", err)
	}
	v, err := blockstore.Open(p, blockstore.OpenOptions{})
	if err != nil {
		t.Fatalf("blockstore.Open on faultfs: %v", err)
	}
	// An open file would keep the detached mount (and its server) alive.
	t.Cleanup(func() { v.Close() })
	return p, v
}

// powerCut stops v the way a power cut does: the disk takes nothing more
// (so Close cannot sync what the cut lost), the unsynced data goes, and
// power comes back.
func powerCut(t *testing.T, f *faultfs.FS, v *blockstore.LocalVolume) {
	t.Helper()
	if err := f.SetFault(faultfs.Fault{Ops: faultfs.OpWrite | faultfs.OpSync, Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	f.PowerLoss()
	_ = v.Close() // fails: the disk is gone
	f.Clear()
}

// TestBlockstorePowerLoss: after a power loss the blockstore reopens and
// holds exactly what was made durable (Flush, or a FUA write) before it,
// over a seeded random mix of writes, FUA writes and flushes. This is
// what replication relies on when it acknowledges a write.
func TestBlockstorePowerLoss(t *testing.T) {
	f := mountFS(t)
	ctx := context.Background()
	p, v := createVolume(t, f)

	const block = 4096
	current := make([]byte, volSize) // what reads must return now
	durable := make([]byte, volSize) // what must survive a power cut
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range 400 {
		op := rng.IntN(10)
		if i >= 390 {
			op = 9 // end with writes no sync covers
		}
		switch {
		case op == 0:
			if err := v.Flush(ctx); err != nil {
				t.Fatalf("op %d: flush: %v", i, err)
			}
			copy(durable, current)
		default:
			// Unaligned offsets and lengths too: the blockstore
			// read-modify-writes them.
			off := rng.Int64N(volSize - 3*block)
			if rng.IntN(2) == 0 {
				off &^= block - 1
			}
			n := 1 + rng.IntN(3*block)
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			var flags blockstore.WriteFlags
			if op == 1 {
				flags = blockstore.FUA
			}
			if _, err := v.WriteAt(ctx, data, off, flags); err != nil {
				t.Fatalf("op %d: write: %v", i, err)
			}
			copy(current[off:], data)
			if flags&blockstore.FUA != 0 {
				// The model syncs the whole file on RWF_DSYNC
				// (faultfs doc.go): everything before it is durable.
				copy(durable, current)
			}
		}
	}
	got := make([]byte, volSize)
	if _, err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, current) {
		t.Fatal("before the power cut the volume does not read what was written")
	}
	if bytes.Equal(current, durable) {
		t.Fatal("test is vacuous: everything written was made durable")
	}
	powerCut(t, f, v)

	v, err := blockstore.Open(p, blockstore.OpenOptions{})
	if err != nil {
		t.Fatalf("reopen after power loss: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	if _, err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, durable) {
		for off := 0; off < volSize; off += block {
			if !bytes.Equal(got[off:off+block], durable[off:off+block]) {
				t.Fatalf("after power loss block at %d differs from the flushed state (unsynced data kept: %v)",
					off, bytes.Equal(got[off:off+block], current[off:off+block]))
			}
		}
	}
}

// TestBlockstoreDiskErrors: injected EIO and ENOSPC on write surface as
// errors from WriteAt (not a panic, not a silent success) and change
// nothing; EIO on sync fails Flush and FUA writes, and stays failed (the
// blockstore's sticky sync error) after the disk recovers.
func TestBlockstoreDiskErrors(t *testing.T) {
	f := mountFS(t)
	ctx := context.Background()
	_, v := createVolume(t, f)
	data := bytes.Repeat([]byte{0xab}, 8192)
	if _, err := v.WriteAt(ctx, data, 0, blockstore.FUA); err != nil {
		t.Fatal(err)
	}
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
		if err := f.SetFault(faultfs.Fault{Ops: faultfs.OpWrite, Path: "vol.img", Err: errno}); err != nil {
			t.Fatal(err)
		}
		n, err := v.WriteAt(ctx, bytes.Repeat([]byte{0xcd}, 8192), 0, 0)
		if !errors.Is(err, errno) || n != 0 {
			t.Fatalf("WriteAt under a %v fault: n=%d err=%v, want 0 and %v", errno, n, err, errno)
		}
		f.Clear()
		got := make([]byte, 8192)
		if _, err := v.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("a write failed with %v but changed the data", errno)
		}
	}
	if _, err := v.WriteAt(ctx, data, 8192, 0); err != nil {
		t.Fatalf("write after the disk recovered: %v", err)
	}

	if err := f.SetFault(faultfs.Fault{Ops: faultfs.OpSync, Path: "vol.img", Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Flush under a sync EIO fault: %v, want EIO", err)
	}
	if _, err := v.WriteAt(ctx, data, 0, blockstore.FUA); err == nil {
		t.Fatal("FUA write under a sync EIO fault succeeded")
	}
	f.Clear()
	if err := v.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded after an earlier sync failed: the failure must be sticky")
	}
	if c := f.Counters(); c.Injected["write/EIO"] == 0 || c.Injected["write/ENOSPC"] == 0 || c.Injected["sync/EIO"] == 0 {
		t.Errorf("counters %v miss injected faults", c.Injected)
	}
}
