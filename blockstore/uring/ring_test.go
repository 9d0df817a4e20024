package uring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const block = 4096

func alignedBuf(n int) []byte {
	b := make([]byte, n+block)
	o := int(uintptr(unsafe.Pointer(&b[0])) & (block - 1))
	if o != 0 {
		o = block - o
	}
	return b[o : o+n : o+n]
}

// openRing opens path with flags and a ring on it, skipping where the
// kernel has no io_uring.
func openRing(t *testing.T, path string, flags int, size int64) (*os.File, *File) {
	t.Helper()
	f, err := os.OpenFile(path, flags|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if size > 0 {
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	u, err := Open(f)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f, u
}

// Data written through the ring (plain and RWF_DSYNC) reads back through
// both the ring and the file, with O_DIRECT.
func TestRoundTrip(t *testing.T) {
	f, u := openRing(t, filepath.Join(t.TempDir(), "f"), os.O_RDWR|unix.O_DIRECT, 1<<20)
	for i, flags := range []uint32{0, RWFDsync} {
		p := alignedBuf(8 * block)
		for j := range p {
			p[j] = byte(i*7 + j)
		}
		off := int64(i) * 16 * block
		if n, err := u.WriteAt(p, off, flags); n != len(p) || err != nil {
			t.Fatalf("WriteAt(flags %#x) = %d, %v", flags, n, err)
		}
		got := alignedBuf(len(p))
		if n, err := u.ReadAt(got, off); n != len(p) || err != nil {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("ring read back differs (flags %#x)", flags)
		}
		clear(got)
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("file read back differs or failed: %v", err)
		}
	}
	if err := u.Nop(); err != nil {
		t.Fatal(err)
	}
	if err := u.Datasync(); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines writing distinct blocks at once (more than the ring's
// slots) all land, and batches form.
func TestConcurrent(t *testing.T) {
	const blocks, workers = 512, 3 * Entries
	f, u := openRing(t, filepath.Join(t.TempDir(), "f"), os.O_RDWR|unix.O_DIRECT, blocks*block)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			p := alignedBuf(block)
			for b := w; b < blocks; b += workers {
				for i := range p {
					p[i] = byte(b)
				}
				p[0], p[1] = byte(b>>8), byte(b)
				if _, err := u.WriteAt(p, int64(b)*block, 0); err != nil {
					errs <- err
					return
				}
				if b%3 == 0 {
					if _, err := u.ReadAt(p, int64(b)*block); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := alignedBuf(blocks * block)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for b := range blocks {
		p := got[b*block : (b+1)*block]
		if p[0] != byte(b>>8) || p[1] != byte(b) || p[block-1] != byte(b) {
			t.Fatalf("block %d holds %d,%d...%d", b, p[0], p[1], p[block-1])
		}
	}
}

// A read that runs past the end of the file fails as the blocking path's
// does (io.ErrUnexpectedEOF), after the bytes that were there.
func TestShortRead(t *testing.T) {
	_, u := openRing(t, filepath.Join(t.TempDir(), "f"), os.O_RDWR|unix.O_DIRECT, 2*block)
	p := alignedBuf(4 * block)
	n, err := u.ReadAt(p, block)
	if n != block || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt past EOF = %d, %v; want %d, io.ErrUnexpectedEOF", n, err, block)
	}
}

// Kernel errors come back as *os.PathError holding the errno, as from
// os.File: EBADF writing a read-only file, ENOSPC on a full filesystem.
func TestErrno(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ro")
	if err := os.WriteFile(path, make([]byte, block), 0o600); err != nil {
		t.Fatal(err)
	}
	_, u := openRing(t, path, os.O_RDONLY, 0)
	_, err := u.WriteAt(alignedBuf(block), 0, 0)
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, syscall.EBADF) || pe.Path != path {
		t.Fatalf("write to a read-only file: %v (%T); want an *os.PathError for %s wrapping EBADF", err, err, path)
	}

	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	mnt := filepath.Join(dir, "tmpfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	// tmpfs has no O_DIRECT; the ring does not care.
	_, u = openRing(t, filepath.Join(mnt, "f"), os.O_RDWR, 0)
	p := make([]byte, 256<<10)
	var off int64
	for ; off < 4<<20; off += int64(len(p)) {
		if _, err = u.WriteAt(p, off, 0); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &pe) {
		t.Fatalf("filling a 1 MiB tmpfs: stopped at %d with %v; want an *os.PathError wrapping ENOSPC", off, err)
	}
	if _, err := u.WriteAt(p[:block], 8<<20, RWFDsync); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("RWF_DSYNC write to a full tmpfs: %v; want ENOSPC", err)
	}
}

// Close waits for nothing when idle, fails later requests with
// os.ErrClosed, and is idempotent.
func TestClose(t *testing.T) {
	_, u := openRing(t, filepath.Join(t.TempDir(), "f"), os.O_RDWR|unix.O_DIRECT, block)
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteAt(alignedBuf(block), 0, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WriteAt after Close: %v; want os.ErrClosed", err)
	}
}

// Close racing with requests in flight waits for them: every request
// either completes or fails with os.ErrClosed, none hangs.
func TestCloseRace(t *testing.T) {
	_, u := openRing(t, filepath.Join(t.TempDir(), "f"), os.O_RDWR|unix.O_DIRECT, 64*block)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			p := alignedBuf(block)
			for {
				_, err := u.WriteAt(p, int64(rand.IntN(64))*block, 0)
				if errors.Is(err, os.ErrClosed) {
					return
				}
				if err != nil {
					panic(fmt.Sprintf("worker %d: %v", w, err))
				}
			}
		})
	}
	for range 100 {
		if err := u.Nop(); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func BenchmarkWrite4K(b *testing.B) {
	dir := b.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const blocks = 4096
	if err := f.Truncate(blocks * block); err != nil {
		b.Fatal(err)
	}
	// Written once, so the benchmark measures overwrites.
	if _, err := f.WriteAt(make([]byte, blocks*block), 0); err != nil {
		b.Fatal(err)
	}
	u, err := Open(f)
	if err != nil {
		b.Skip(err)
	}
	defer u.Close()
	var ut *File
	var ferr error
	rc, _ := f.SyscallConn()
	rc.Control(func(fd uintptr) { ut, ferr = setup(f.Name(), int(fd), true) })
	if ferr != nil {
		b.Fatal(ferr)
	}
	defer ut.Close()
	for _, mode := range []string{"pwrite", "uring", "uring-thread"} {
		b.Run(mode, func(b *testing.B) {
			b.SetParallelism(16)
			before := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				p := alignedBuf(block)
				for pb.Next() {
					off := int64(rand.IntN(blocks)) * block
					var err error
					switch mode {
					case "uring":
						_, err = u.WriteAt(p, off, 0)
					case "uring-thread":
						_, err = ut.WriteAt(p, off, 0)
					default:
						_, err = f.WriteAt(p, off)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(cpuTime(b)-before)/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// The alternative reaper (a thread in io_uring_enter) delivers completions
// and stops on Close too.
func TestReapThread(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 * block); err != nil {
		t.Fatal(err)
	}
	var u *File
	rc, _ := f.SyscallConn()
	rc.Control(func(fd uintptr) { u, err = setup(f.Name(), int(fd), true) })
	if err != nil {
		t.Skip(err)
	}
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			p := alignedBuf(block)
			p[0] = byte(w)
			if _, err := u.WriteAt(p, int64(w)*block, 0); err != nil {
				t.Error(err)
			}
			clear(p)
			if _, err := u.ReadAt(p, int64(w)*block); err != nil || p[0] != byte(w) {
				t.Errorf("block %d reads %d, %v", w, p[0], err)
			}
		})
	}
	wg.Wait()
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
}

// The ring holds a description of its own, so closing the file releases
// its flock at once, however the ring's asynchronous teardown goes.
func TestFlockReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for i := range 50 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatalf("round %d: flock: %v", i, err)
		}
		if err := f.Truncate(4 * block); err != nil {
			t.Fatal(err)
		}
		u, err := Open(f)
		if err != nil {
			t.Skip(err)
		}
		if _, err := u.WriteAt(alignedBuf(block), block, RWFDsync); err != nil {
			t.Fatal(err)
		}
		if err := u.Datasync(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // either order
			u.Close()
			f.Close()
		} else {
			f.Close()
			defer u.Close()
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock after the last close: %v", err)
	}
}
