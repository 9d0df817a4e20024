package faultfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mount mounts a fresh faultfs for t and returns it with its backing
// directory; the mount is gone when t ends, whatever the outcome.
func mount(t *testing.T, opts Options) *FS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faultfs needs root (mount(2))")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(context.Background(), backing, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if mounted(t, mnt) {
			t.Errorf("%s still mounted after Unmount", mnt)
		}
	})
	return f
}

// mounted reports whether p is a mount point in /proc/self/mountinfo.
func mounted(t *testing.T, p string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && fields[4] == p {
			return true
		}
	}
	return false
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func readBack(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, data []byte, off int64, flags int, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPowerLossDropsUnsynced: written but not synced is gone after a
// power loss; written and synced stays; what was read in between was the
// new data.
func TestPowerLossDropsUnsynced(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "file")
	old := pattern(3*pageSize+100, 1)
	writeFile(t, p, old, 0, 0, true)

	// Unaligned, unsynced overwrite plus an extension of the file.
	upd := pattern(pageSize+10, 99)
	writeFile(t, p, upd, pageSize-5, 0, false)
	writeFile(t, p, []byte("tail"), int64(len(old))+50, 0, false)
	want := append([]byte(nil), old...)
	copy(want[pageSize-5:], upd)
	want = append(want, make([]byte, 50)...)
	want = append(want, "tail"...)
	if got := readBack(t, p); !bytes.Equal(got, want) {
		t.Fatalf("before power loss: read %d bytes, want %d (unsynced data must be readable)", len(got), len(want))
	}
	if got := readBack(t, filepath.Join(f.Backing(), "file")); !bytes.Equal(got, old) {
		t.Fatalf("backing file holds unsynced data before any sync")
	}

	f.PowerLoss()
	if got := readBack(t, p); !bytes.Equal(got, old) {
		t.Fatalf("after power loss: read %d bytes, want the %d synced bytes", len(got), len(old))
	}
	c := f.Counters()
	if c.PowerLosses != 1 || c.DroppedBytes == 0 {
		t.Errorf("counters %+v: want 1 power loss and dropped bytes", c)
	}

	// Now the same with a sync: it survives.
	writeFile(t, p, upd, pageSize-5, 0, true)
	f.PowerLoss()
	want = append([]byte(nil), old...)
	copy(want[pageSize-5:], upd)
	if got := readBack(t, p); !bytes.Equal(got, want) {
		t.Fatalf("synced write lost by a power loss")
	}
}

// TestWriteOnly: a write-only descriptor writes partial pages (the mount
// reads the backing file to fill them).
func TestWriteOnly(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "wo")
	writeFile(t, p, pattern(2*pageSize, 1), 0, 0, true)
	for _, flags := range []int{os.O_WRONLY, os.O_WRONLY | os.O_CREATE | os.O_EXCL} {
		if flags&os.O_EXCL != 0 {
			p = filepath.Join(f.Mountpoint(), "wo-new")
		}
		fh, err := os.OpenFile(p, flags, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteAt([]byte("mid"), 100); err != nil {
			t.Fatalf("write-only descriptor (flags %#x): %v", flags, err)
		}
		fh.Close()
	}
	want := pattern(2*pageSize, 1)
	copy(want[100:], "mid")
	if got := readBack(t, filepath.Join(f.Mountpoint(), "wo")); !bytes.Equal(got, want) {
		t.Fatal("write-only partial write: wrong content")
	}
}

// TestUnlinkedOpenFile: a deleted file's descriptor still reads its own
// unsynced writes, and a new file that reuses the inode number starts
// clean.
func TestUnlinkedOpenFile(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "tmp")
	fh, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte("scratch"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := fh.ReadAt(buf, 0); err != nil || string(buf) != "scratch" {
		t.Fatalf("read of a deleted open file: %q, %v", buf, err)
	}
	fh.Close()
	for i := range 20 { // inode numbers are reused quickly on most filesystems
		q := filepath.Join(f.Mountpoint(), fmt.Sprintf("n%d", i))
		writeFile(t, q, nil, 0, 0, false)
		if st, err := os.Stat(q); err != nil || st.Size() != 0 {
			t.Fatalf("new file %s: %v, %v; want it empty", q, st, err)
		}
	}
	if d := f.DirtyBytes(); d != 0 {
		t.Fatalf("%d unsynced bytes left after the only written file was deleted and closed", d)
	}
}

// TestPowerLossNewFile: a created file's unsynced data is lost, the file
// itself (metadata) stays, empty.
func TestPowerLossNewFile(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "new")
	writeFile(t, p, pattern(10000, 3), 0, 0, false)
	if st, err := os.Stat(p); err != nil || st.Size() != 10000 {
		t.Fatalf("stat before power loss: %v %v, want size 10000", st, err)
	}
	f.PowerLoss()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 {
		t.Fatalf("size after power loss %d, want 0", st.Size())
	}
}

// TestSyncFlags: O_DSYNC and O_SYNC descriptors and RWF_DSYNC writes are
// durable when the write returns, without fsync; plain writes on the
// same file are not.
func TestSyncFlags(t *testing.T) {
	f := mount(t, Options{})
	for _, tc := range []struct {
		name  string
		flags int
		rwf   bool
	}{
		{"O_DSYNC", unix.O_DSYNC, false},
		{"O_SYNC", unix.O_SYNC, false},
		{"O_DIRECT|O_DSYNC", unix.O_DIRECT | unix.O_DSYNC, false},
		{"RWF_DSYNC", 0, true},
		{"O_DIRECT+RWF_DSYNC", unix.O_DIRECT, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(f.Mountpoint(), strings.ReplaceAll(tc.name, "|", "_"))
			data := alignedPattern(2*pageSize, 5)
			fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|tc.flags, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if tc.rwf {
				_, err = unix.Pwritev2(fd, [][]byte{data}, 0, unix.RWF_DSYNC)
			} else {
				_, err = unix.Pwrite(fd, data, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			f.PowerLoss()
			if got := readBack(t, p); !bytes.Equal(got, data) {
				t.Fatalf("%s write lost by a power loss (read %d bytes)", tc.name, len(got))
			}
		})
	}
	t.Run("plain O_DIRECT", func(t *testing.T) {
		p := filepath.Join(f.Mountpoint(), "direct")
		data := alignedPattern(2*pageSize, 6)
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT, 0o644)
		if err != nil {
			t.Fatalf("O_DIRECT open on faultfs: %v", err)
		}
		defer unix.Close(fd)
		if _, err := unix.Pwrite(fd, data, 0); err != nil {
			t.Fatal(err)
		}
		got := alignedPattern(2*pageSize, 0)
		if _, err := unix.Pread(fd, got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("O_DIRECT read back: %v, equal %v", err, bytes.Equal(got, data))
		}
		f.PowerLoss()
		if st, err := os.Stat(p); err != nil || st.Size() != 0 {
			t.Fatalf("unsynced O_DIRECT write survived a power loss: %v %v", st, err)
		}
		if _, err := unix.Pwrite(fd, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			t.Fatal(err)
		}
		f.PowerLoss()
		if got := readBack(t, p); !bytes.Equal(got, data) {
			t.Fatal("fdatasynced O_DIRECT write lost by a power loss")
		}
	})
}

// alignedPattern is pattern in a page-aligned buffer (O_DIRECT).
func alignedPattern(n int, seed byte) []byte {
	buf := make([]byte, n+pageSize)
	off := 0
	for uintptr(unsafe.Pointer(unsafe.SliceData(buf[off:])))%pageSize != 0 {
		off++
	}
	b := buf[off : off+n]
	copy(b, pattern(n, seed))
	return b
}

// TestFaults: each error rule fails its operation class on matching paths
// only, the operation is not applied, and clearing restores service.
func TestFaults(t *testing.T) {
	f := mount(t, Options{})
	mnt := f.Mountpoint()
	if err := os.Mkdir(filepath.Join(mnt, "volumes"), 0o755); err != nil {
		t.Fatal(err)
	}
	faulty := filepath.Join(mnt, "volumes", "v.img")
	other := filepath.Join(mnt, "other")
	base := pattern(pageSize, 1)
	writeFile(t, faulty, base, 0, 0, true)
	writeFile(t, other, base, 0, 0, true)

	open := func(p string) *os.File {
		t.Helper()
		fh, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fh.Close() })
		return fh
	}

	t.Run("write EIO", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpWrite, Path: "volumes", Err: syscall.EIO}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		if _, err := open(faulty).WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
			t.Fatalf("write under an EIO rule: %v, want EIO", err)
		}
		if _, err := open(other).WriteAt([]byte("x"), 0); err != nil {
			t.Fatalf("write outside the rule's path: %v", err)
		}
		if got := readBack(t, faulty); !bytes.Equal(got, base) {
			t.Fatal("a failed write was applied")
		}
	})
	t.Run("write ENOSPC", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpWrite, Path: "volumes/*.img", Err: syscall.ENOSPC}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		if _, err := open(faulty).WriteAt([]byte("x"), 0); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write under an ENOSPC rule: %v, want ENOSPC", err)
		}
	})
	t.Run("sync EIO", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpSync, Err: syscall.EIO}); err != nil {
			t.Fatal(err)
		}
		fh := open(faulty)
		if _, err := fh.WriteAt([]byte("new"), 0); err != nil {
			t.Fatalf("write under a sync-only rule: %v", err)
		}
		if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("fsync under an EIO rule: %v, want EIO", err)
		}
		if err := unix.Fdatasync(int(fh.Fd())); !errors.Is(err, syscall.EIO) {
			t.Fatalf("fdatasync under an EIO rule: %v, want EIO", err)
		}
		fd, err := unix.Open(faulty, unix.O_RDWR|unix.O_DSYNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Pwrite(fd, []byte("dsync"), 0); !errors.Is(err, syscall.EIO) {
			t.Errorf("O_DSYNC write under a sync EIO rule: %v, want EIO", err)
		}
		unix.Close(fd)
		f.Clear()
		// The failed syncs made nothing durable.
		f.PowerLoss()
		if got := readBack(t, faulty); !bytes.Equal(got, base) {
			t.Fatalf("data of failed syncs survived a power loss: %q", got[:8])
		}
	})
	t.Run("flush EIO", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpFlush, Path: "volumes", Err: syscall.EIO}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		fh, err := os.Open(faulty)
		if err != nil {
			t.Fatal(err)
		}
		if err := fh.Close(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("close under a flush EIO rule: %v, want EIO", err)
		}
	})
	t.Run("read EIO", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpRead, Path: "volumes", Err: syscall.EIO}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		if _, err := os.ReadFile(faulty); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read under an EIO rule: %v, want EIO", err)
		}
		if _, err := os.ReadFile(other); err != nil {
			t.Fatalf("read outside the rule's path: %v", err)
		}
	})
	t.Run("meta ENOSPC", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpMeta, Path: "volumes", Err: syscall.ENOSPC}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		if _, err := os.Create(filepath.Join(mnt, "volumes", "new")); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("create under an ENOSPC rule: %v, want ENOSPC", err)
		}
		if _, err := os.Stat(filepath.Join(f.Backing(), "volumes", "new")); !os.IsNotExist(err) {
			t.Fatalf("a refused create created the file: %v", err)
		}
	})
	t.Run("slow", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		if err := f.SetFault(Fault{Ops: OpWrite, Path: "volumes", Delay: delay}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		start := time.Now()
		if _, err := open(faulty).WriteAt([]byte("slow"), 0); err != nil {
			t.Fatalf("delayed write: %v", err)
		}
		// A lower bound only: a slow machine can only make it longer.
		if el := time.Since(start); el < delay {
			t.Fatalf("delayed write took %v, less than the %v delay", el, delay)
		}
	})
	t.Run("times", func(t *testing.T) {
		if err := f.SetFault(Fault{Ops: OpWrite, Path: "volumes", Err: syscall.EIO, Times: 2}); err != nil {
			t.Fatal(err)
		}
		defer f.Clear()
		fh := open(faulty)
		for i := range 2 {
			if _, err := fh.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("write %d under a 2-times rule: %v, want EIO", i, err)
			}
		}
		if _, err := fh.WriteAt([]byte("x"), 0); err != nil {
			t.Fatalf("third write under a 2-times rule: %v", err)
		}
		if len(f.Faults()) != 0 {
			t.Fatalf("a used-up rule is still listed: %+v", f.Faults())
		}
	})
	c := f.Counters()
	for _, k := range []string{"write/EIO", "write/ENOSPC", "sync/EIO", "flush/EIO", "read/EIO", "meta/ENOSPC", "write/delay"} {
		if c.Injected[k] == 0 {
			t.Errorf("counter %s is 0: %v", k, c.Injected)
		}
	}
}

func TestFaultValidation(t *testing.T) {
	for _, flt := range []Fault{
		{},
		{Ops: OpWrite},
		{Ops: OpWrite, Err: syscall.EIO, Path: "/abs"},
		{Ops: OpWrite, Err: syscall.EIO, Path: "[bad"},
		{Ops: 1 << 20, Err: syscall.EIO},
		{Ops: OpWrite, Delay: -time.Second},
	} {
		var tb faults
		if err := tb.set(flt); err == nil {
			t.Errorf("%+v accepted", flt)
		}
	}
	for pat, paths := range map[string][2][]string{
		"":              {{"a", "a/b/c", ""}, nil},
		"volumes":       {{"volumes", "volumes/x.img", "volumes/a/b"}, {"vol", "other/volumes", "volumesx"}},
		"volumes/*.img": {{"volumes/x.img"}, {"volumes/x.meta", "volumes"}},
	} {
		fl := Fault{Ops: OpWrite, Err: syscall.EIO, Path: pat}
		for _, p := range paths[0] {
			if !fl.matches(p) {
				t.Errorf("pattern %q does not match %q", pat, p)
			}
		}
		for _, p := range paths[1] {
			if fl.matches(p) {
				t.Errorf("pattern %q matches %q", pat, p)
			}
		}
	}
}

// TestConcurrentWriters: writers to disjoint ranges of one file and to
// separate files, with syncs in between, all land; after a power loss
// exactly the synced rounds remain.
func TestConcurrentWriters(t *testing.T) {
	f := mount(t, Options{})
	const writers, rounds, chunk = 4, 20, 3 * pageSize / 2
	shared := filepath.Join(f.Mountpoint(), "shared")
	writeFile(t, shared, nil, 0, 0, true)
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			fh, err := os.OpenFile(shared, os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer fh.Close()
			for r := range rounds {
				if _, err := fh.WriteAt(pattern(chunk, byte(r)), int64((r*writers+w)*chunk)); err != nil {
					errs <- err
					return
				}
				if r%2 == 0 {
					if err := fh.Sync(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			p := filepath.Join(f.Mountpoint(), fmt.Sprintf("own%d", w))
			fh, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				errs <- err
				return
			}
			defer fh.Close()
			for r := range rounds {
				if _, err := fh.WriteAt(pattern(chunk, byte(w+r)), int64(r*chunk)); err != nil {
					errs <- err
					return
				}
			}
			if err := fh.Sync(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := readBack(t, shared)
	if len(got) != rounds*writers*chunk {
		t.Fatalf("shared file is %d bytes, want %d", len(got), rounds*writers*chunk)
	}
	for r := range rounds {
		for w := range writers {
			off := (r*writers + w) * chunk
			if !bytes.Equal(got[off:off+chunk], pattern(chunk, byte(r))) {
				t.Fatalf("shared file: round %d writer %d chunk wrong", r, w)
			}
		}
	}
	for w := range writers {
		got := readBack(t, filepath.Join(f.Mountpoint(), fmt.Sprintf("own%d", w)))
		for r := range rounds {
			if !bytes.Equal(got[r*chunk:(r+1)*chunk], pattern(chunk, byte(w+r))) {
				t.Fatalf("file own%d: round %d chunk wrong", w, r)
			}
		}
	}
	// Each own file was synced at the end: a power loss keeps all.
	f.PowerLoss()
	for w := range writers {
		if got := readBack(t, filepath.Join(f.Mountpoint(), fmt.Sprintf("own%d", w))); len(got) != rounds*chunk {
			t.Fatalf("synced file own%d lost data in a power loss: %d bytes", w, len(got))
		}
	}
}

// TestTruncateAndPunch: truncate and fallocate are immediate and drop the
// unsynced data they cover.
func TestTruncateAndPunch(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "t")
	writeFile(t, p, pattern(4*pageSize, 1), 0, 0, true)
	writeFile(t, p, pattern(4*pageSize, 2), 0, 0, false)
	if err := os.Truncate(p, 3*pageSize+7); err != nil {
		t.Fatal(err)
	}
	want := pattern(4*pageSize, 2)[:3*pageSize+7]
	if got := readBack(t, p); !bytes.Equal(got, want) {
		t.Fatal("truncate: wrong content")
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Fallocate(int(fh.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, pageSize/2, pageSize); err != nil {
		t.Fatal(err)
	}
	clear(want[pageSize/2 : pageSize/2+pageSize])
	if got := readBack(t, p); !bytes.Equal(got, want) {
		t.Fatal("punch hole: wrong content")
	}
	f.PowerLoss()
	want = pattern(4*pageSize, 1)[:3*pageSize+7]
	clear(want[pageSize/2 : pageSize/2+pageSize])
	if got := readBack(t, p); !bytes.Equal(got, want) {
		t.Fatal("after power loss: want the synced data, truncated and punched")
	}
}

// TestUnmountBusy: a mount with an open file still unmounts (lazily), and
// a clean unmount writes unsynced data back.
func TestUnmountBusy(t *testing.T) {
	f := mount(t, Options{})
	p := filepath.Join(f.Mountpoint(), "busy")
	fh, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("unsynced"), 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Unmount(context.Background()) }()
	// The open file keeps the detached connection; closing it lets the
	// server stop.
	for mounted(t, f.Mountpoint()) {
		time.Sleep(10 * time.Millisecond)
	}
	fh.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if mounted(t, f.Mountpoint()) {
		t.Fatal("still mounted")
	}
	if got := readBack(t, filepath.Join(f.Backing(), "busy")); string(got) != "unsynced" {
		t.Fatalf("clean unmount did not write back: %q", got)
	}
	if err := f.Unmount(context.Background()); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
}

// TestControl: the control protocol drives a mount like the Go API, and
// "unmount" stops the server and unmounts.
func TestControl(t *testing.T) {
	f := mount(t, Options{})
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	served := make(chan error, 1)
	go func() { served <- Serve(context.Background(), f, sock) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c *Client
	for {
		var err error
		if c, err = Dial(ctx, sock); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	p := filepath.Join(f.Mountpoint(), "c")
	writeFile(t, p, []byte("synced"), 0, 0, true)

	want := Fault{Ops: OpWrite | OpSync, Path: "c", Err: syscall.ENOSPC, Delay: time.Millisecond}
	if err := c.SetFault(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Faults(ctx); err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("faults %+v, %v; want [%+v]", got, err, want)
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write under a fault set over the socket: %v, want ENOSPC", err)
	}
	if err := c.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("UNSYNC"), 0); err != nil {
		t.Fatal(err)
	}
	cnt, dirty, err := c.Counters(ctx)
	if err != nil || cnt.Injected["write/ENOSPC"] != 1 || dirty == 0 {
		t.Fatalf("counters %+v dirty %d, %v", cnt, dirty, err)
	}
	if err := c.PowerLoss(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, p); string(got) != "synced" {
		t.Fatalf("after a power loss over the socket: %q", got)
	}
	if err := c.SetFault(ctx, Fault{Ops: OpWrite}); err == nil {
		t.Fatal("a fault without error or delay accepted")
	}
	if _, err := c.call(ctx, request{Op: "bogus"}); err == nil || !strings.Contains(err.Error(), "unknown request") {
		t.Fatalf("unknown request: %v", err)
	}
	fh.Close()
	if err := c.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if mounted(t, f.Mountpoint()) {
		t.Fatal("still mounted after unmount over the socket")
	}
}

// helperEnv makes the test binary a mount helper (TestUnmountStale).
const helperEnv = "FAULTFS_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "mount" {
		// args: backing mountpoint
		_, err := Mount(context.Background(), os.Args[1], os.Args[2], Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("ready")
		select {}
	}
	os.Exit(m.Run())
}

// TestUnmountStale: a mount whose server process died (SIGKILL) answers
// ENOTCONN; UnmountStale removes it and leaves live mounts alone.
func TestUnmountStale(t *testing.T) {
	live := mount(t, Options{})
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, backing, mnt)
	cmd.Env = append(os.Environ(), helperEnv+"=mount")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		unix.Unmount(mnt, unix.MNT_DETACH) // only if the test failed
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("x"), 0o644); err != nil {
		t.Fatalf("helper's mount: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != unix.ENOTCONN {
		t.Fatalf("stat of a dead server's mount: %v, want ENOTCONN", err)
	}
	gone, err := UnmountStale()
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0] != mnt {
		t.Fatalf("UnmountStale removed %v, want [%s]", gone, mnt)
	}
	if mounted(t, mnt) {
		t.Fatal("stale mount still there")
	}
	if !mounted(t, live.Mountpoint()) {
		t.Fatal("UnmountStale removed a live mount")
	}
}
