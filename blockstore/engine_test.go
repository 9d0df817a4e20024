package blockstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/blockstore/uring"
)

// openEngine opens a fresh volume with the given options, logging to buf.
func openEngine(t *testing.T, opts OpenOptions, log *bytes.Buffer) (*LocalVolume, string) {
	t.Helper()
	path := filepath.Join(directIODir(t), "vol.img")
	if err := Create(path, 8<<20, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	v, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, path
}

// With IOURing, aligned, unaligned and FUA writes and reads round-trip,
// also from many goroutines at once, and the data is what a blocking
// reopen reads; Close releases the file at once (flock included).
func TestIOURingEngine(t *testing.T) {
	for _, e := range []IOEngine{IOURing, IOURingAlways} {
		t.Run(string(e), func(t *testing.T) { testIOURingEngine(t, e) })
	}
}

func testIOURingEngine(t *testing.T, e IOEngine) {
	var log bytes.Buffer
	v, path := openEngine(t, OpenOptions{IO: e}, &log)
	if v.Engine() != e {
		t.Skipf("io_uring not available here: %s", log.String())
	}
	ctx := context.Background()
	want := make([]byte, v.Size())
	write := func(p []byte, off int64, flags WriteFlags) {
		if n, err := v.WriteAt(ctx, p, off, flags); n != len(p) || err != nil {
			t.Errorf("WriteAt(%d bytes at %d, %v) = %d, %v", len(p), off, flags, n, err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 64 {
		wg.Go(func() {
			// Aligned in an aligned buffer (the direct path), then
			// unaligned (bounce and read-modify-write), FUA on odd
			// workers; each worker owns its 64 KiB.
			base := int64(w) << 16
			p := alignedBuf(4 * blockSize)
			for i := range p {
				p[i] = byte(w + i)
			}
			flags := WriteFlags(0)
			if w%2 == 1 {
				flags = FUA
			}
			write(p, base, flags)
			q := []byte(fmt.Sprintf("worker %d was here", w))
			write(q, base+5*blockSize+100, flags)
			mu.Lock()
			copy(want[base:], p)
			copy(want[base+5*blockSize+100:], q)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, v.Size()) // not aligned: bounced reads
	if _, err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("io_uring volume reads back something else")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v2, err := Open(path, OpenOptions{IO: IOSync, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("reopen right after Close: %v", err)
	}
	defer v2.Close()
	clear(got)
	if _, err := v2.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("blocking reopen reads something else (err %v)", err)
	}
}

// Where the kernel refuses io_uring, the volume says why once and uses
// blocking I/O.
func TestIOURingFallback(t *testing.T) {
	var log bytes.Buffer
	refuse := func(*os.File) (*uring.File, error) { return nil, fmt.Errorf("io_uring_setup: %w", unix.ENOSYS) }
	v, _ := openEngine(t, OpenOptions{IO: IOURing, ringOpen: refuse}, &log)
	if v.Engine() != IOSync {
		t.Fatalf("Engine = %q, want %q", v.Engine(), IOSync)
	}
	if n := strings.Count(log.String(), "io_uring unavailable"); n != 1 || !strings.Contains(log.String(), "function not implemented") {
		t.Fatalf("log (%d warnings):\n%s", n, log.String())
	}
	p := alignedBuf(blockSize)
	p[0] = 42
	ctx := context.Background()
	if _, err := v.WriteAt(ctx, p, 0, FUA); err != nil {
		t.Fatal(err)
	}
	clear(p)
	if _, err := v.ReadAt(ctx, p, 0); err != nil || p[0] != 42 {
		t.Fatalf("read back %d, %v", p[0], err)
	}
}

// IODefault follows IOEngineEnv, and is IOURing without it; an unknown
// value is logged and means blocking I/O.
func TestIOEngineEnv(t *testing.T) {
	for _, c := range []struct {
		env  string
		want IOEngine
		warn string
	}{
		{"", IOURing, ""},
		{"sync", IOSync, ""},
		{"uring", IOURing, ""},
		{"uring-always", IOURingAlways, ""},
		{"aio", IOSync, "unknown I/O engine"},
	} {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(IOEngineEnv, c.env)
			var log bytes.Buffer
			v, _ := openEngine(t, OpenOptions{}, &log)
			if c.want != IOSync && strings.Contains(log.String(), "io_uring unavailable") {
				t.Skipf("io_uring not available here: %s", log.String())
			}
			if v.Engine() != c.want {
				t.Errorf("Engine = %q, want %q", v.Engine(), c.want)
			}
			if c.warn != "" && !strings.Contains(log.String(), c.warn) {
				t.Errorf("log lacks %q:\n%s", c.warn, log.String())
			}
		})
	}
}

// IOURing sends a request through the ring only when another is under
// way; IOURingAlways always does.
func TestViaRing(t *testing.T) {
	var log bytes.Buffer
	v, _ := openEngine(t, OpenOptions{IO: IOURing}, &log)
	d, ok := v.f.(*osDisk)
	if !ok || d.ring == nil {
		t.Skipf("io_uring not available here: %s", log.String())
	}
	if d.viaRing() {
		t.Error("a lone request goes through the ring")
	}
	if !d.viaRing() {
		t.Error("an overlapping request does not go through the ring")
	}
	d.done()
	d.done()
	d.always = true
	if !d.viaRing() {
		t.Error("IOURingAlways: a lone request does not go through the ring")
	}
	d.done()
}
