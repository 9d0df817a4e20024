//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/cephtest"
)

// One micro Ceph cluster per test binary, started by the first test that
// needs it and killed by TestMain.
var shared struct {
	once sync.Once
	c    *cephtest.Cluster
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "closing the Ceph cluster: %v\n", err)
			code = 1
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// testTimeout is the Ceph client's monitor timeout in these tests: short,
// so the tests of an unavailable cluster are quick.
const testTimeout = 3 * time.Second

// cluster returns the shared cluster, starting it on first use; a
// failure to start fails every test that needs it.
func cluster(t *testing.T) *cephtest.Cluster {
	t.Helper()
	shared.once.Do(func() {
		if err := cephtest.Available(); err != nil {
			shared.err = err
			return
		}
		shared.dir, shared.err = cephtest.TempDir()
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.c, shared.err = cephtest.Start(ctx, cephtest.Options{
			Dir:  shared.dir + "/c",
			Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
		})
		if shared.err == nil {
			fmt.Fprintf(os.Stderr, "micro Ceph cluster (1 mon, 1 mgr, %d bluestore OSDs, pool size %d) started in %v\n",
				cephtest.DefaultOSDs, shared.c.PoolSize, shared.c.Started.Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		t.Fatalf("micro Ceph cluster: %v", shared.err)
	}
	return shared.c
}

func adminConfig(c *cephtest.Cluster) Config {
	return Config{MonHost: c.MonHost, Client: "admin", Key: c.AdminKey, Pool: c.Pool, MonTimeout: testTimeout, OSDTimeout: 10 * time.Second}
}

func connectPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := Connect(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Connect(%s): %v", cfg, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func openVolume(t *testing.T, cfg Config, name string, o OpenOptions) *Volume {
	t.Helper()
	v, err := Open(t.Context(), cfg, name, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t *testing.T, v *Volume, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := v.ReadAt(t.Context(), b, off); err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return b
}

// TestImageLifecycle: create with the default features, write, read,
// flush, trim, zero, resize, reopen, delete, through librbd as a
// blockstore.Volume.
func TestImageLifecycle(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	const name, size = "life", 64 << 20

	if err := p.Create(ctx, name, size); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := p.Create(ctx, name, size); !errors.Is(err, ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}
	info, err := p.Stat(ctx, name)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != size || info.Features&DefaultFeatures != DefaultFeatures {
		t.Errorf("Stat = size %d features %#x, want %d and %#x", info.Size, info.Features, size, DefaultFeatures)
	}
	if len(info.Watchers) != 0 || len(info.LockOwners) != 0 {
		t.Errorf("fresh image has watchers %v, lock owners %v", info.Watchers, info.LockOwners)
	}

	v := openVolume(t, cfg, name, OpenOptions{Exclusive: true})
	if v.Size() != size {
		t.Errorf("Size() = %d, want %d", v.Size(), size)
	}
	// Unaligned, spanning RBD's 4 MiB objects, and with FUA.
	a := randomBytes(t, 3<<20+123)
	if n, err := v.WriteAt(ctx, a, 4<<20-1000, 0); err != nil || n != len(a) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	b := randomBytes(t, 4096)
	if _, err := v.WriteAt(ctx, b, 0, blockstore.FUA); err != nil {
		t.Fatalf("WriteAt FUA: %v", err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := readAll(t, v, 4<<20-1000, len(a)); !bytes.Equal(got, a) {
		t.Error("read back differs from what was written")
	}
	// Trim and WriteZeroes read back as zeroes, also partly inside an
	// object.
	if err := v.Trim(ctx, 4<<20, 8192); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	if err := v.WriteZeroes(ctx, 5<<20+100, 5000, blockstore.NoHole); err != nil {
		t.Fatalf("WriteZeroes NoHole: %v", err)
	}
	if err := v.WriteZeroes(ctx, 6<<20, 4096, 0); err != nil {
		t.Fatalf("WriteZeroes: %v", err)
	}
	want := slices.Clone(a)
	clear(want[1000 : 1000+8192])
	clear(want[1<<20+1100 : 1<<20+1100+5000])
	clear(want[2<<20+1000 : 2<<20+1000+4096])
	if got := readAll(t, v, 4<<20-1000, len(a)); !bytes.Equal(got, want) {
		t.Error("after Trim and WriteZeroes, the data differs from what was expected")
	}
	// Past the end: refused before reaching Ceph.
	if _, err := v.WriteAt(ctx, b, size-100, 0); !errors.Is(err, blockstore.ErrOutOfRange) {
		t.Errorf("write past the end = %v, want ErrOutOfRange", err)
	}
	if _, err := v.ReadAt(ctx, b, size); !errors.Is(err, blockstore.ErrOutOfRange) {
		t.Errorf("read past the end = %v, want ErrOutOfRange", err)
	}
	// Grow, then write at the new end.
	if err := v.Resize(ctx, 2*size); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	if v.Size() != 2*size {
		t.Errorf("Size() after Resize = %d", v.Size())
	}
	if _, err := v.WriteAt(ctx, b, 2*size-4096, blockstore.FUA); err != nil {
		t.Fatalf("write at the new end: %v", err)
	}
	info, err = v.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if len(info.Watchers) != 1 || info.Watchers[0].Addr != v.ClientAddr() {
		t.Errorf("watchers = %+v, want only this opener (%s)", info.Watchers, v.ClientAddr())
	}
	if len(info.LockOwners) != 1 || info.LockOwners[0].Addr != v.ClientAddr() {
		t.Errorf("lock owners = %+v, want this opener (%s)", info.LockOwners, v.ClientAddr())
	}
	if err := p.Remove(ctx, name); !errors.Is(err, ErrBusy) {
		t.Errorf("Remove of an open image = %v, want ErrBusy", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := v.ReadAt(ctx, b, 0); !errors.Is(err, blockstore.ErrClosed) {
		t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
	}

	// What was written is on the image for the next opener.
	v2 := openVolume(t, cfg, name, OpenOptions{ReadOnly: true})
	if v2.Size() != 2*size {
		t.Errorf("reopened Size() = %d, want %d", v2.Size(), 2*size)
	}
	if got := readAll(t, v2, 0, len(b)); !bytes.Equal(got, b) {
		t.Error("reopened image lost the FUA write")
	}
	if got := readAll(t, v2, 2*size-4096, len(b)); !bytes.Equal(got, b) {
		t.Error("reopened image lost the write past the old end")
	}
	if _, err := v2.WriteAt(ctx, b, 0, 0); !errors.Is(err, blockstore.ErrReadOnly) {
		t.Errorf("write to a read-only opener = %v, want ErrReadOnly", err)
	}
	v2.Close()
	if err := p.Resize(ctx, name, size); err != nil {
		t.Fatalf("Pool.Resize: %v", err)
	}
	if info, err := p.Stat(ctx, name); err != nil || info.Size != size {
		t.Errorf("Stat after shrink = %+v, %v", info, err)
	}
	if err := p.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if names, err := p.List(ctx); err != nil || slices.Contains(names, name) {
		t.Errorf("List after Remove = %v, %v", names, err)
	}
	if _, err := p.Stat(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after Remove = %v, want ErrNotFound", err)
	}
	if _, err := Open(ctx, cfg, name, OpenOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Remove = %v, want ErrNotFound", err)
	}
}

// TestTakeoverFencesStaleWriter is the library side of the acceptance's
// stale writer: A holds the exclusive lock; B cannot write; B takes over
// (blocklist A, then break its lock, then acquire); A, still running,
// gets EBLOCKLISTED and its write is not on the image; the blocklist
// entry goes only when removed.
func TestTakeoverFencesStaleWriter(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	const name, size = "takeover", 16 << 20
	if err := p.Create(ctx, name, size); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), name) })

	a := openVolume(t, cfg, name, OpenOptions{Exclusive: true})
	first := randomBytes(t, 4096)
	if _, err := a.WriteAt(ctx, first, 0, blockstore.FUA); err != nil {
		t.Fatalf("A's write: %v", err)
	}
	if own, err := a.IsLockOwner(ctx); err != nil || !own {
		t.Fatalf("A owns the lock: %v, %v", own, err)
	}

	b := openVolume(t, cfg, name, OpenOptions{})
	if a.ClientAddr() == b.ClientAddr() || a.ClientAddr() == "" {
		t.Fatalf("client addresses A %q and B %q must differ", a.ClientAddr(), b.ClientAddr())
	}
	if _, err := b.WriteAt(ctx, randomBytes(t, 4096), 8192, 0); !errors.Is(err, ErrLockHeld) {
		t.Errorf("B's write while A holds the lock = %v, want ErrLockHeld", err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, ErrLockHeld) {
		t.Errorf("B's Acquire while A holds the lock = %v, want ErrLockHeld", err)
	}
	info, err := p.Stat(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.LockOwners) != 1 || info.LockOwners[0].Addr != a.ClientAddr() {
		t.Errorf("lock owners = %+v, want A (%s)", info.LockOwners, a.ClientAddr())
	}
	if len(info.Watchers) != 2 {
		t.Errorf("watchers = %+v, want A and B", info.Watchers)
	}

	// A record that fails stops the takeover before anything is
	// blocklisted; the record is made before the blocklist.
	refuse := errors.New("catalog unavailable")
	if _, err := b.Takeover(ctx, time.Hour, func([]string) error { return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("Takeover with a failing record: %v", err)
	}
	if bl, err := p.Blocklist(ctx); err != nil || slices.Contains(bl, a.ClientAddr()) {
		t.Fatalf("blocklist %v (%v) after a failed record holds A", bl, err)
	}
	var recorded []string
	fenced, err := b.Takeover(ctx, time.Hour, func(addrs []string) error {
		bl, err := p.Blocklist(ctx)
		if err != nil || slices.Contains(bl, a.ClientAddr()) {
			t.Errorf("blocklist %v (%v) at the record already holds A", bl, err)
		}
		recorded = addrs
		return nil
	})
	if err != nil {
		t.Fatalf("Takeover: %v", err)
	}
	if !slices.Equal(fenced, []string{a.ClientAddr()}) || !slices.Equal(recorded, fenced) {
		t.Errorf("Takeover fenced %v (recorded %v), want [%s]", fenced, recorded, a.ClientAddr())
	}
	if own, err := b.IsLockOwner(ctx); err != nil || !own {
		t.Errorf("B owns the lock after Takeover: %v, %v", own, err)
	}
	bl, err := p.Blocklist(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(bl, a.ClientAddr()) {
		t.Errorf("blocklist %v lacks A (%s)", bl, a.ClientAddr())
	}

	// A, alive, writes after the takeover: EBLOCKLISTED, and not applied.
	// B's first requests carry the OSD map with the blocklist entry, so
	// the OSDs they reach hold it from then on (an OSD that has not got
	// the map yet could still apply a request of A that comes first: it
	// is then ordered before everything B does, as a write in flight at
	// a crash).
	if got := readAll(t, b, 0, 4096); !bytes.Equal(got, first) {
		t.Error("A's write from before the takeover is lost")
	}
	next := randomBytes(t, 4096)
	if _, err := b.WriteAt(ctx, next, 1<<20, blockstore.FUA); err != nil {
		t.Fatalf("B's write after the takeover: %v", err)
	}

	// A, alive, writes after the takeover: EBLOCKLISTED, and not applied,
	// neither over B's data nor elsewhere.
	stale := randomBytes(t, 4096)
	for _, off := range []int64{1 << 20, 2 << 20} {
		if _, err := a.WriteAt(ctx, stale, off, blockstore.FUA); !errors.Is(err, ErrBlocklisted) {
			t.Errorf("A's write at %d after the takeover = %v, want ErrBlocklisted", off, err)
		} else {
			t.Logf("stale writer's error: %v", err)
		}
	}
	if err := a.Flush(ctx); err == nil {
		t.Error("A's flush after the takeover succeeded")
	}
	if err := a.Close(); err != nil {
		t.Logf("closing the fenced opener: %v", err)
	}
	if got := readAll(t, b, 1<<20, 4096); !bytes.Equal(got, next) {
		t.Error("the stale writer's write replaced B's")
	}
	if got := readAll(t, b, 2<<20, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("the stale writer's write is on the image")
	}
	info, err = b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.LockOwners) != 1 || info.LockOwners[0].Addr != b.ClientAddr() {
		t.Errorf("lock owners after the takeover = %+v, want B (%s, client.%d; A was client.%d)", info.LockOwners, b.ClientAddr(), b.ClientID(), a.ClientID())
	}

	// A takeover with no owner fences nobody and just takes the lock.
	if err := b.Release(ctx); err != nil {
		t.Fatalf("B's Release: %v", err)
	}
	d := openVolume(t, cfg, name, OpenOptions{})
	if fenced, err := d.Takeover(ctx, time.Hour, nil); err != nil || len(fenced) != 0 {
		t.Errorf("Takeover of an unlocked image = %v, %v; want no one fenced", fenced, err)
	}
	if own, err := d.IsLockOwner(ctx); err != nil || !own {
		t.Errorf("D owns the lock after its Takeover: %v, %v", own, err)
	}

	// The entry stays until removed.
	if err := p.BlocklistRemove(ctx, a.ClientAddr()); err != nil {
		t.Fatalf("BlocklistRemove: %v", err)
	}
	if bl, err = p.Blocklist(ctx); err != nil || slices.Contains(bl, a.ClientAddr()) {
		t.Errorf("blocklist after remove = %v, %v", bl, err)
	}
	if err := p.BlocklistAdd(ctx, "not an address", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("BlocklistAdd of garbage = %v, want ErrInvalid", err)
	}
}

// TestBadInputLeavesNothing: malformed names and sizes and a size the
// pool cannot hold each fail clearly and leave no image.
func TestBadInputLeavesNothing(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	before, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	avail, err := p.Available(ctx)
	if err != nil || avail <= 0 {
		t.Fatalf("Available = %d, %v", avail, err)
	}
	t.Logf("pool %s can hold %d MiB", c.Pool, avail>>20)
	tooBig := (avail/4096 + 1) * 4096
	for _, tc := range []struct {
		name string
		size int64
		want error
	}{
		{"big", tooBig, ErrNoSpace},
		{"zero", 0, ErrInvalid},
		{"odd", 4097, ErrInvalid},
		{"Bad/Name", 1 << 20, ErrInvalid},
	} {
		err := p.Create(ctx, tc.name, tc.size)
		if !errors.Is(err, tc.want) {
			t.Errorf("Create(%q, %d) = %v, want %v", tc.name, tc.size, err, tc.want)
		} else {
			t.Logf("Create(%q, %d): %v", tc.name, tc.size, err)
		}
	}
	after, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("images before %v, after the refused creates %v", before, after)
	}
	if _, err := Open(ctx, cfg, "missing", OpenOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing image = %v, want ErrNotFound", err)
	}
}

// bounded runs f and fails the test if it has not returned after limit:
// a hang detector (limit is many times the configured timeout), not a
// performance assertion. It returns how long f took.
func bounded(t *testing.T, limit time.Duration, f func()) time.Duration {
	t.Helper()
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return time.Since(t0)
	case <-time.After(limit):
		t.Fatalf("still blocked after %v (configured timeout %v)", limit, testTimeout)
		return 0
	}
}

// TestCredentialsAndPool: a wrong key, an unknown client and a missing
// pool each fail with their own error; a client with RBD caps on the pool
// only works.
func TestCredentialsAndPool(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	key, err := c.AddClient(ctx, "tandem")
	if err != nil {
		t.Fatal(err)
	}
	good := Config{MonHost: c.MonHost, Client: "tandem", Key: key, Pool: c.Pool, MonTimeout: testTimeout}
	p := connectPool(t, good)
	if err := p.Create(ctx, "caps", 1<<20); err != nil {
		t.Fatalf("Create as client.tandem: %v", err)
	}
	if err := p.Remove(ctx, "caps"); err != nil {
		t.Fatalf("Remove as client.tandem: %v", err)
	}

	wrongKey := good
	wrongKey.Key = "AQAAr1JnAAAAABAAAAECAwQFBgcICQoLDA0ODw=="
	unknown := good
	unknown.Client = "nobody"
	noPool := good
	noPool.Pool = "nosuchpool"
	for _, tc := range []struct {
		name string
		cfg  Config
		want error
	}{
		{"wrong key", wrongKey, ErrAuth},
		{"unknown client", unknown, ErrAuth},
		{"missing pool", noPool, ErrNoPool},
	} {
		var err error
		took := bounded(t, 20*testTimeout, func() { _, err = Connect(ctx, tc.cfg) })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Connect = %v, want %v", tc.name, err, tc.want)
			continue
		}
		t.Logf("%s: %v (after %v)", tc.name, err, took.Round(time.Millisecond))
		bounded(t, 20*testTimeout, func() { _, err = Open(ctx, tc.cfg, "any", OpenOptions{}) })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Open = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestMonitorDown: with the monitor killed, a new connection and a
// monitor command fail with ErrUnavailable within the configured bound;
// after it is back, everything written is there.
func TestMonitorDown(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	const name = "mondown"
	if err := p.Create(ctx, name, 8<<20); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), name) })
	v := openVolume(t, cfg, name, OpenOptions{Exclusive: true})
	data := randomBytes(t, 64<<10)
	if _, err := v.WriteAt(ctx, data, 1<<20, blockstore.FUA); err != nil {
		t.Fatal(err)
	}

	if err := c.KillMon(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			c.StartMon()
		}
	})

	var err error
	took := bounded(t, 20*testTimeout, func() { _, err = Connect(ctx, cfg) })
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Connect with the monitor down = %v, want ErrUnavailable", err)
	}
	t.Logf("Connect with the monitor down: %v (after %v)", err, took.Round(time.Millisecond))
	took = bounded(t, 20*testTimeout, func() { err = p.Create(ctx, "never", 1<<20) })
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Create with the monitor down = %v, want ErrUnavailable", err)
	}
	t.Logf("Create with the monitor down: %v (after %v)", err, took.Round(time.Millisecond))
	took = bounded(t, 20*testTimeout, func() { err = p.BlocklistAdd(ctx, "127.0.0.1:0/1", time.Minute) })
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("BlocklistAdd with the monitor down = %v, want ErrUnavailable", err)
	}
	t.Logf("BlocklistAdd with the monitor down: %v (after %v)", err, took.Round(time.Millisecond))

	if err := c.StartMon(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.WaitActive(wctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, 1<<20, len(data)); !bytes.Equal(got, data) {
		t.Error("data written before the monitor died differs after it is back")
	}
	p2 := connectPool(t, cfg)
	if names, err := p2.List(ctx); err != nil || !slices.Contains(names, name) || slices.Contains(names, "never") {
		t.Errorf("images after the monitor is back = %v, %v", names, err)
	}
}

// TestConcurrentIO: the Volume serves concurrent requests (as the NBD
// export issues them): writers on their own regions and on one shared
// block, with reads in between; every region reads back as written and
// the shared block holds exactly one writer's data, never a mix.
func TestConcurrentIO(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	const name, size, writers, blocks = "concurrent", 16 << 20, 8, 32
	if err := p.Create(ctx, name, size); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), name) })
	v := openVolume(t, cfg, name, OpenOptions{Exclusive: true})

	data := make([][]byte, writers)
	shared := make([][]byte, writers)
	for w := range writers {
		data[w] = randomBytes(t, blocks*4096)
		shared[w] = bytes.Repeat([]byte{byte(w + 1)}, 64<<10)
	}
	const sharedOff = 15 << 20
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			base := int64(w) * blocks * 4096
			for b := range blocks {
				off := base + int64(b)*4096
				if _, err := v.WriteAt(ctx, data[w][b*4096:(b+1)*4096], off, 0); err != nil {
					errs <- err
					return
				}
				if b%8 == 0 {
					buf := make([]byte, 4096)
					if _, err := v.ReadAt(ctx, buf, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(buf, data[w][b*4096:(b+1)*4096]) {
						errs <- fmt.Errorf("writer %d: block %d reads back differently", w, b)
						return
					}
				}
			}
			_, err := v.WriteAt(ctx, shared[w], sharedOff, 0)
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		if got := readAll(t, v, int64(w)*blocks*4096, blocks*4096); !bytes.Equal(got, data[w]) {
			t.Errorf("writer %d's region differs", w)
		}
	}
	got := readAll(t, v, sharedOff, 64<<10)
	if !slices.ContainsFunc(shared, func(s []byte) bool { return bytes.Equal(s, got) }) {
		t.Errorf("the shared range holds a mix of writers (first bytes %v)", got[:8])
	}
}
