package blockstore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Tests on real block devices: loop devices over files in a temp dir. They
// skip where loop devices are unavailable (not root, no /dev/loop-control).

func loopBacking(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(directIODir(t), "backing.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeviceVolume(t *testing.T) {
	ctx := t.Context()
	const devSize = 64 << 20
	dev := attachLoop(t, loopBacking(t, devSize), false)

	info, err := ProbeDisk(dev)
	if err != nil || info.Kind != DiskDevice || info.Capacity != devSize || info.Free != devSize {
		t.Fatalf("ProbeDisk(%s) = %+v, %v", dev, info, err)
	}
	if err := Create(dev, devSize, CreateOptions{}); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Create larger than the device: %v", err)
	}
	if err := Create(dev, 0, CreateOptions{MaxPeers: 3}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(dev, OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	size := v.Size()
	fits := func(s int64) bool { return s+metadataBytes(s, 64<<10, 3) <= devSize }
	if size <= 0 || !fits(size) || fits(size+blockSize) {
		t.Fatalf("Size %d does not use the %d-byte device well", size, devSize)
	}
	if !v.device || v.lay.devSize != devSize {
		t.Fatalf("layout %+v", v.lay)
	}
	// The device is held exclusively.
	if _, err := Open(dev, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open of the device: %v", err)
	}
	data := bytes.Repeat([]byte("tandem!"), 300000)
	if _, err := v.WriteAt(ctx, data, 12345, FUA); err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, 20000, 100000); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(ctx, 500000, 300000, NoHole); err != nil {
		t.Fatal(err)
	}
	copy(data[20000-12345:], make([]byte, 100000))
	copy(data[500000-12345:], make([]byte, 300000))
	if err := v.MarkDirty(ctx, 2, size-1, 1); err != nil {
		t.Fatal(err)
	}
	if err := v.SetEpoch(ctx, 42); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v, err = Open(dev, OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := v.ReadAt(ctx, got, 12345); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("device content differs after reopen")
	}
	if v.Meta().Epoch != 42 || v.DirtyBytes(2) != 64<<10-(v.lay.regions*64<<10-size) {
		t.Fatalf("metadata after reopen: %+v, dirty %d", v.Meta(), v.DirtyBytes(2))
	}
	id := v.Meta().VolumeID
	v.Close()

	// Formatting again needs Force, which makes a new volume.
	if err := Create(dev, 0, CreateOptions{}); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "valid Tandem metadata") {
		t.Fatalf("Create over existing metadata: %v", err)
	}
	if err := Create(dev, 8<<20, CreateOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	v, err = Open(dev, OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Meta().VolumeID == id || v.Size() != 8<<20 || v.Meta().Epoch != 0 {
		t.Fatalf("forced re-format: %+v", v.Meta())
	}
}

// TestDeviceIOErrors makes a real block device fail with EIO: a loop device
// in direct-I/O mode returns EIO for reads past the end of its (shrunk)
// backing file, and for writes once the backing file is immutable.
func TestDeviceIOErrors(t *testing.T) {
	ctx := t.Context()
	const devSize = 16 << 20
	backing := loopBacking(t, devSize)
	dev := attachLoop(t, backing, true)
	if err := Create(dev, 0, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(dev, OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	buf := alignedBuf(8192)
	if _, err := v.WriteAt(ctx, buf, 4<<20, FUA); err != nil {
		t.Fatal(err)
	}

	// Reads past the end of the backing file fail.
	if err := os.Truncate(backing, 1<<20); err != nil {
		t.Fatal(err)
	}
	n, err := v.ReadAt(ctx, buf, 4<<20)
	if n != 0 || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "read [4194304, +8192)") {
		t.Fatalf("read from failing device: n=%d, err=%v", n, err)
	}
	if n, err := v.ReadAt(ctx, buf[:100], 4<<20+5); n != 0 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("unaligned read from failing device: n=%d, err=%v", n, err)
	}
	if _, err := v.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("read below the failure: %v", err)
	}

	// Writes fail once the backing file is immutable.
	setImmutable(t, backing, true)
	t.Cleanup(func() { setImmutable(t, backing, false) })
	for _, c := range []struct {
		name  string
		off   int64
		p     []byte
		flags WriteFlags
	}{
		{"aligned", 8192, buf, 0},
		{"aligned FUA", 8192, buf, FUA},
		{"unaligned", 100, buf[:10], 0},
	} {
		n, err := v.WriteAt(ctx, c.p, c.off, c.flags)
		if n != 0 || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), dev) {
			t.Errorf("%s write to failing device: n=%d, err=%v", c.name, n, err)
		}
	}
	if err := v.MarkDirty(ctx, 0, 0, 1); !errors.Is(err, syscall.EIO) {
		t.Errorf("MarkDirty on failing device: %v", err)
	}
	if err := v.SetEpoch(ctx, 5); !errors.Is(err, syscall.EIO) || v.Meta().Epoch != 0 {
		t.Errorf("SetEpoch on failing device: %v (epoch now %d)", err, v.Meta().Epoch)
	}
}

// setImmutable sets or clears FS_IMMUTABLE_FL (chattr +i).
func setImmutable(t *testing.T, path string, on bool) {
	t.Helper()
	const immutable = 0x10 // FS_IMMUTABLE_FL
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var flags int
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_GETFLAGS, uintptr(unsafe.Pointer(&flags))); e != 0 {
		t.Skipf("FS_IOC_GETFLAGS: %v", e)
	}
	if on {
		flags |= immutable
	} else {
		flags &^= immutable
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_SETFLAGS, uintptr(unsafe.Pointer(&flags))); e != 0 {
		if on {
			t.Skipf("cannot make %s immutable: %v", path, e)
		}
		t.Errorf("clear immutable flag on %s: %v", path, e)
	}
}
