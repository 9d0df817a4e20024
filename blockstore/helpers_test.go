package blockstore

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// directIODir returns a fresh directory on a filesystem that accepts
// O_DIRECT: t.TempDir() if it does, else one under /var/tmp. It fails the
// test with a clear message if neither does.
func directIODir(t testing.TB) string {
	t.Helper()
	probe := func(d string) error {
		p := filepath.Join(d, ".odirect-probe")
		defer os.Remove(p)
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(alignedBuf(blockSize), 0)
		return err
	}
	d := t.TempDir()
	err := probe(d)
	if err == nil {
		return d
	}
	t.Logf("%s does not support O_DIRECT (%v); trying /var/tmp", d, err)
	if d, err = os.MkdirTemp("/var/tmp", "blockstore-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		if err = probe(d); err == nil {
			return d
		}
	}
	t.Fatalf("no directory supporting O_DIRECT (last error: %v): set TMPDIR to a directory on ext4, xfs or btrfs", err)
	return ""
}

// newVolume creates and opens a file volume.
func newVolume(t testing.TB, size int64, opts CreateOptions) (*LocalVolume, string) {
	t.Helper()
	path := filepath.Join(directIODir(t), "vol.img")
	if err := Create(path, size, opts); err != nil {
		t.Fatalf("Create: %v", err)
	}
	v := mustOpen(t, path)
	return v, path
}

func mustOpen(t testing.TB, path string) *LocalVolume {
	t.Helper()
	v, err := Open(path, OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// testLogger sends the volume's log to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// crash drops the volume without persisting deferred bitmap changes or
// syncing, as if the process died.
func crash(v *LocalVolume) {
	v.life.Lock()
	defer v.life.Unlock()
	v.closed = true
	v.f.Close()
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// faultDisk wraps a diskFile to count operations and inject failures or
// delays. Install it with v.f = &faultDisk{diskFile: v.f} before the volume
// is used concurrently.
type faultDisk struct {
	diskFile
	mu                            sync.Mutex
	reads, writes, syncs, fallocs int
	failRead                      func(off int64, n int) error
	failWrite                     func(off int64, n int) error
	failSync                      error
	failFalloc                    error
	beforeWrite                   func(off int64) // may block
}

func (d *faultDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.reads++
	fail := d.failRead
	d.mu.Unlock()
	if fail != nil {
		if err := fail(off, len(p)); err != nil {
			return 0, err
		}
	}
	return d.diskFile.ReadAt(p, off)
}

func (d *faultDisk) write(p []byte, off int64, dsync bool) (int, error) {
	d.mu.Lock()
	d.writes++
	fail, before := d.failWrite, d.beforeWrite
	d.mu.Unlock()
	if before != nil {
		before(off)
	}
	if fail != nil {
		if err := fail(off, len(p)); err != nil {
			return 0, err
		}
	}
	if dsync {
		return d.diskFile.WriteAtDsync(p, off)
	}
	return d.diskFile.WriteAt(p, off)
}

func (d *faultDisk) WriteAt(p []byte, off int64) (int, error) { return d.write(p, off, false) }
func (d *faultDisk) WriteAtDsync(p []byte, off int64) (int, error) {
	return d.write(p, off, true)
}

func (d *faultDisk) Datasync() error {
	d.mu.Lock()
	d.syncs++
	err := d.failSync
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.diskFile.Datasync()
}

func (d *faultDisk) Fallocate(mode uint32, off, length int64) error {
	d.mu.Lock()
	d.fallocs++
	err := d.failFalloc
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.diskFile.Fallocate(mode, off, length)
}

func (d *faultDisk) counts() (reads, writes, syncs int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reads, d.writes, d.syncs
}

func inject(v *LocalVolume) *faultDisk {
	fd := &faultDisk{diskFile: v.f}
	v.f = fd
	return fd
}

// attachLoop attaches backing to a free loop device and returns its path.
// It skips the test where loop devices are not available (not root, no
// /dev/loop-control).
func attachLoop(t testing.TB, backing string, directIO bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	defer ctl.Close()
	bf, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			bf.Close()
			t.Skipf("LOOP_CTL_GET_FREE: %v", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		var lf *os.File
		for range 50 { // devtmpfs may need a moment for a new node
			if lf, err = os.OpenFile(dev, os.O_RDWR, 0); err == nil || !errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			bf.Close()
			t.Skipf("open %s: %v", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(bf.Fd())}
		if directIO {
			cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO
		}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) { // raced with another user of loop devices
			lf.Close()
			continue
		}
		if err != nil {
			lf.Close()
			bf.Close()
			t.Skipf("LOOP_CONFIGURE %s: %v", dev, err)
		}
		t.Cleanup(func() {
			if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
				t.Logf("detach %s: %v", dev, err)
			}
			lf.Close()
			bf.Close()
		})
		return dev
	}
	bf.Close()
	t.Skip("no free loop device")
	return ""
}
