package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc64"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestCreateOpenRoundTrip(t *testing.T) {
	ctx := t.Context()
	dir := directIODir(t)
	path := filepath.Join(dir, "v.img")
	id := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	gens := Generations{Current: 11, Bitmap: 22, History: [2]uint64{33, 44}}
	const size = 8 << 20
	opts := CreateOptions{Granularity: 128 << 10, MaxPeers: 3, VolumeID: id, Generations: gens, DiskState: DiskUpToDate}
	if err := Create(path, size, opts); err != nil {
		t.Fatal(err)
	}
	if err := Create(path, size, opts); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: got %v, want fs.ErrExist", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(size) + metadataBytes(size, 128<<10, 3); fi.Size() != want {
		t.Fatalf("file size %d, want %d", fi.Size(), want)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 < fi.Size() {
		t.Fatalf("file is sparse: %d bytes allocated of %d", st.Blocks*512, fi.Size())
	}
	v := mustOpen(t, path)
	m := v.Meta()
	want := Meta{VolumeID: id, Size: size, Granularity: 128 << 10, MaxPeers: 3, Generations: gens,
		DiskState: DiskUpToDate, Peers: make([]PeerSlot, 3)}
	if !metaEqual(m, want) {
		t.Fatalf("Meta = %+v, want %+v", m, want)
	}
	if v.Size() != size {
		t.Fatalf("Size = %d", v.Size())
	}
	// Defaults.
	p2 := filepath.Join(dir, "d.img")
	if err := Create(p2, 4096, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v2 := mustOpen(t, p2)
	m2 := v2.Meta()
	if m2.Granularity != 64<<10 || m2.MaxPeers != 2 || m2.DiskState != DiskInconsistent || m2.VolumeID == [16]byte{} {
		t.Fatalf("defaults: %+v", m2)
	}
	if m2.VolumeID[6]>>4 != 4 {
		t.Fatalf("volume ID %x is not a version 4 UUID", m2.VolumeID)
	}
	// The volume is locked while open.
	if _, err := Open(p2, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("second Open: %v", err)
	}
	// Bad options.
	for _, bad := range []struct {
		size int64
		o    CreateOptions
	}{
		{0, CreateOptions{}},
		{4097, CreateOptions{}},
		{4096, CreateOptions{Granularity: 3 << 12}},
		{4096, CreateOptions{Granularity: 2048}},
		{4096, CreateOptions{MaxPeers: 8}},
	} {
		p := filepath.Join(dir, "bad.img")
		if err := Create(p, bad.size, bad.o); err == nil {
			t.Errorf("Create(%d, %+v) succeeded", bad.size, bad.o)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("failed Create left %s behind", p)
			os.Remove(p)
		}
	}
	_ = ctx
}

func metaEqual(a, b Meta) bool {
	if len(a.Peers) != len(b.Peers) {
		return false
	}
	for i := range a.Peers {
		if a.Peers[i] != b.Peers[i] {
			return false
		}
	}
	a.Peers, b.Peers = nil, nil
	return a.VolumeID == b.VolumeID && a.Size == b.Size && a.Granularity == b.Granularity &&
		a.MaxPeers == b.MaxPeers && a.Generations == b.Generations && a.Epoch == b.Epoch && a.DiskState == b.DiskState
}

func TestMetadataPersists(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 1<<20, CreateOptions{MaxPeers: 3})
	gens := Generations{Current: 0xdead, Bitmap: 0xbeef, History: [2]uint64{1, 2}}
	steps := []error{
		v.SetEpoch(ctx, 7),
		v.SetGenerations(ctx, gens),
		v.SetDiskState(ctx, DiskOutdated),
		v.AssignPeer(ctx, 0, "node-b"),
		v.AssignPeer(ctx, 2, strings.Repeat("x", 63)),
		v.SetPeerFlags(ctx, 2, PeerOutdated|PeerFullSync|1<<40),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := v.SetEpoch(ctx, 6); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("SetEpoch backwards: %v", err)
	}
	fd := inject(v)
	if err := v.SetEpoch(ctx, 7); err != nil {
		t.Fatalf("SetEpoch same: %v", err)
	}
	if _, w, s := fd.counts(); w != 0 || s != 0 {
		t.Fatalf("re-recording the same epoch did I/O: %d writes, %d syncs", w, s)
	}
	if err := v.SetEpoch(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if _, w, s := fd.counts(); w != 1 || s != 1 {
		t.Fatalf("SetEpoch: %d writes, %d syncs; want 1 and 1", w, s)
	}
	// Invalid arguments.
	for i, err := range []error{
		v.SetDiskState(ctx, 0),
		v.SetDiskState(ctx, 9),
		v.AssignPeer(ctx, 3, "x"),
		v.AssignPeer(ctx, -1, "x"),
		v.AssignPeer(ctx, 1, "node-b"), // already in slot 0
		v.AssignPeer(ctx, 1, strings.Repeat("x", 64)),
		v.AssignPeer(ctx, 1, "a\x00b"),
		v.SetPeerFlags(ctx, 5, 1),
	} {
		if err == nil {
			t.Errorf("invalid call %d succeeded", i)
		}
	}
	want := v.Meta()
	if want.Epoch != 9 || want.Generations != gens || want.DiskState != DiskOutdated ||
		want.Peers[0] != (PeerSlot{Name: "node-b"}) || want.Peers[1] != (PeerSlot{}) ||
		want.Peers[2] != (PeerSlot{Name: strings.Repeat("x", 63), Flags: PeerOutdated | PeerFullSync | 1<<40}) {
		t.Fatalf("Meta = %+v", want)
	}
	// Meta returns a copy.
	want.Peers[0].Name = "mutated"
	if v.Meta().Peers[0].Name != "node-b" {
		t.Fatal("Meta shares its Peers slice")
	}
	want.Peers[0].Name = "node-b"
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v2 := mustOpen(t, path)
	if got := v2.Meta(); !metaEqual(got, want) {
		t.Fatalf("after reopen Meta = %+v, want %+v", got, want)
	}
	// Freeing a slot.
	if err := v2.AssignPeer(ctx, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := v2.AssignPeer(ctx, 1, "node-b"); err != nil {
		t.Fatalf("reusing a freed name: %v", err)
	}
}

// model is an in-memory copy of what the volume should contain.
func TestRandomIOAgainstModel(t *testing.T) {
	ctx := t.Context()
	const size = 4 << 20
	v, path := newVolume(t, size, CreateOptions{})
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	randRange := func() (int64, int) {
		var n int
		switch rng.IntN(4) {
		case 0: // aligned
			off := int64(rng.IntN(size/4096)) * 4096
			return off, 4096 * (1 + rng.IntN(min(64, int(size-off)/4096)))
		case 1: // small unaligned
			n = 1 + rng.IntN(300)
		case 2: // block-sized unaligned
			n = 1 + rng.IntN(3*4096)
		default: // larger than one bounce chunk
			n = 1 + rng.IntN(3<<20)
		}
		off := rng.Int64N(size - int64(n) + 1)
		return off, n
	}
	for i := range 400 {
		off, n := randRange()
		// Unaligned buffer addresses half the time.
		backing := alignedBuf(n + 1)
		p := backing[:n]
		if rng.IntN(2) == 0 {
			p = backing[1 : n+1]
		}
		if rng.IntN(2) == 0 {
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			var flags WriteFlags
			if rng.IntN(8) == 0 {
				flags = FUA
			}
			got, err := v.WriteAt(ctx, p, off, flags)
			if err != nil || got != n {
				t.Fatalf("op %d: WriteAt(%d, %d) = %d, %v", i, off, n, got, err)
			}
			copy(model[off:], p)
		} else {
			got, err := v.ReadAt(ctx, p, off)
			if err != nil || got != n {
				t.Fatalf("op %d: ReadAt(%d, %d) = %d, %v", i, off, n, got, err)
			}
			if !bytes.Equal(p, model[off:off+int64(n)]) {
				t.Fatalf("op %d: ReadAt(%d, %d) differs from model", i, off, n)
			}
		}
		if i%100 == 99 {
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			v = mustOpen(t, path)
		}
	}
	all := make([]byte, size)
	if _, err := v.ReadAt(ctx, all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, model) {
		t.Fatal("final content differs from model")
	}
	// Zero-length requests are fine anywhere in range, including the end.
	if n, err := v.WriteAt(ctx, nil, size, FUA); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
	if n, err := v.ReadAt(ctx, nil, size); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

// TestConcurrentOverlappingWriters checks that concurrent, overlapping,
// unaligned writes are serialisable: the final content must be what some
// serial order of all writes produces. Every write stores its 16-bit id in
// each 2-byte unit it covers; the unit's final id must belong to a write
// covering it, and every other write covering the unit must come before that
// one. The test fails if those "before" edges form a cycle (a lost update or
// a torn read-modify-write makes one).
func TestConcurrentOverlappingWriters(t *testing.T) {
	ctx := t.Context()
	// A small area and short writes make concurrent read-modify-writes of
	// one block common; without the range lock this test fails.
	const area = 16 << 10
	const base = 1<<20 - 8192 // straddles a bounce chunk boundary
	v, _ := newVolume(t, 4<<20, CreateOptions{})
	const writers, perWriter = 8, 300
	type op struct{ off, n int64 }
	ops := make([]op, writers*perWriter+1) // id 0 = initial zeroes
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 1; i < len(ops); i++ {
		n := 2 * (1 + rng.Int64N(300))
		if i%16 == 0 {
			n = 2 * (1 + rng.Int64N(4096))
		}
		ops[i] = op{off: 2 * rng.Int64N((area-n)/2+1), n: n}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perWriter {
				id := 1 + w*perWriter + k
				o := ops[id]
				buf := make([]byte, o.n+1)[1:] // unaligned buffer too
				for j := 0; j < len(buf); j += 2 {
					binary.LittleEndian.PutUint16(buf[j:], uint16(id))
				}
				if _, err := v.WriteAt(ctx, buf, base+o.off, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	final := make([]byte, area)
	if _, err := v.ReadAt(ctx, final, base); err != nil {
		t.Fatal(err)
	}
	n := len(ops)
	before := make([]bool, n*n) // before[a*n+b]: a precedes b
	for u := int64(0); u < area; u += 2 {
		id := int(binary.LittleEndian.Uint16(final[u:]))
		if id >= n {
			t.Fatalf("unit %d holds unknown id %d", u, id)
		}
		covered := func(i int) bool { return ops[i].off <= u && u < ops[i].off+ops[i].n }
		if id != 0 && !covered(id) {
			t.Fatalf("unit %d holds id %d, which never wrote there", u, id)
		}
		for i := 1; i < n; i++ {
			if i != id && covered(i) {
				if id == 0 {
					t.Fatalf("unit %d was written by %d but reads as zero (lost update)", u, i)
				}
				before[i*n+id] = true
			}
		}
	}
	// Kahn's algorithm: the "before" graph must be acyclic.
	indeg := make([]int, n)
	for a := range n {
		for b := range n {
			if before[a*n+b] {
				indeg[b]++
			}
		}
	}
	var queue []int
	for i := range n {
		if indeg[i] == 0 {
			queue = append(queue, i)
		}
	}
	seen := 0
	for len(queue) > 0 {
		a := queue[0]
		queue = queue[1:]
		seen++
		for b := range n {
			if before[a*n+b] {
				if indeg[b]--; indeg[b] == 0 {
					queue = append(queue, b)
				}
			}
		}
	}
	if seen != n {
		t.Fatalf("final content matches no serial order of the writes (%d of %d writes ordered)", seen, n)
	}
}

func TestFlushAndFUA(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 1<<20, CreateOptions{})
	if !v.fuaDsync {
		t.Fatal("FUA should default to RWF_DSYNC (see the measurements in local.go)")
	}
	fd := inject(v)
	buf := alignedBuf(4096)
	buf[0] = 1
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, s := fd.counts(); s != 0 {
		t.Fatalf("plain write synced %d times", s)
	}
	// pwrite+fdatasync variant.
	v.fuaDsync = false
	if _, err := v.WriteAt(ctx, buf, 4096, FUA); err != nil {
		t.Fatal(err)
	}
	if _, _, s := fd.counts(); s != 1 {
		t.Fatalf("FUA write: %d syncs, want 1", s)
	}
	// That sync covered every write before it: a flush has nothing to do.
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, s := fd.counts(); s != 1 {
		t.Fatalf("Flush after a synced FUA write: %d syncs total, want 1", s)
	}
	if _, err := v.WriteAt(ctx, buf, 4096, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, s := fd.counts(); s != 2 {
		t.Fatalf("Flush after a plain write: %d syncs total, want 2", s)
	}
	// The RWF_DSYNC variant (default) writes durably without a separate
	// sync, also when bouncing.
	v.fuaDsync = true
	buf[0] = 2
	if _, err := v.WriteAt(ctx, buf[:100], 8191, FUA); err != nil {
		t.Fatal(err)
	}
	if _, _, s := fd.counts(); s != 2 {
		t.Fatalf("RWF_DSYNC FUA write called fdatasync")
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := alignedBuf(4096)
			b[0] = byte(i)
			if _, err := v.WriteAt(ctx, b, int64(i+4)*4096, FUA); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// A failed fdatasync is sticky.
	v.fuaDsync = false
	fd.mu.Lock()
	fd.failSync = syscall.EIO
	fd.mu.Unlock()
	if _, err := v.WriteAt(ctx, buf, 0, FUA); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FUA with failing sync: %v", err)
	}
	fd.mu.Lock()
	fd.failSync = nil
	fd.mu.Unlock()
	if err := v.Flush(ctx); !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "later flush fails") {
		t.Fatalf("Flush after a failed sync must keep failing, got %v", err)
	}
	v.fuaDsync = true
	if _, err := v.WriteAt(ctx, buf, 0, FUA); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FUA after a failed sync must fail, got %v", err)
	}
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatalf("plain writes still work: %v", err)
	}
	crash(v)
	v2 := mustOpen(t, path)
	got := make([]byte, 1)
	v2.ReadAt(ctx, got, 8191)
	if got[0] != 2 {
		t.Fatalf("dsync write not visible after reopen: %d", got[0])
	}

	// A failed RWF_DSYNC write is sticky too: its sync part may be what
	// failed.
	fd2 := inject(v2)
	fd2.failWrite = func(int64, int) error { return syscall.EIO }
	if _, err := v2.WriteAt(ctx, buf, 0, FUA); !errors.Is(err, syscall.EIO) {
		t.Fatalf("failing RWF_DSYNC write: %v", err)
	}
	fd2.failWrite = nil
	if err := v2.Flush(ctx); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Flush after a failed RWF_DSYNC write: %v", err)
	}
}

func TestTrimAndWriteZeroes(t *testing.T) {
	ctx := t.Context()
	const size = 4 << 20
	v, path := newVolume(t, size, CreateOptions{ZeroFill: true})
	fill := func() {
		b := bytes.Repeat([]byte{0xAB}, size)
		if _, err := v.WriteAt(ctx, b, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, zOff, zLen int64) {
		t.Helper()
		b := make([]byte, size)
		if _, err := v.ReadAt(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
		for i, c := range b {
			want := byte(0xAB)
			if int64(i) >= zOff && int64(i) < zOff+zLen {
				want = 0
			}
			if c != want {
				t.Fatalf("%s [%d,+%d): byte %d = %#x, want %#x", what, zOff, zLen, i, c, want)
			}
		}
	}
	allocated := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Blocks * 512
	}
	cases := []struct{ off, n int64 }{
		{4096, 1 << 20},      // aligned
		{100, 200},           // inside one block
		{4000, 200},          // across a block boundary, no whole block
		{1234, 3<<20 + 5678}, // ragged both ends
		{size - 10, 10},      // to the end
		{0, size},            // everything
	}
	for _, c := range cases {
		fill()
		before := allocated()
		if err := v.Trim(ctx, c.off, c.n); err != nil {
			t.Fatal(err)
		}
		check("Trim", c.off, c.n)
		if c.n >= 1<<20 && allocated() >= before {
			t.Errorf("Trim [%d,+%d) did not deallocate (allocated %d -> %d)", c.off, c.n, before, allocated())
		}
		fill()
		if err := v.WriteZeroes(ctx, c.off, c.n, 0); err != nil {
			t.Fatal(err)
		}
		check("WriteZeroes", c.off, c.n)
		fill()
		before = allocated()
		if err := v.WriteZeroes(ctx, c.off, c.n, NoHole|FUA); err != nil {
			t.Fatal(err)
		}
		check("WriteZeroes(NoHole)", c.off, c.n)
		if allocated() < before {
			t.Errorf("WriteZeroes(NoHole) deallocated (%d -> %d)", before, allocated())
		}
	}
	// Where fallocate is unsupported, zeroes are written.
	fd := inject(v)
	fd.failFalloc = syscall.EOPNOTSUPP
	fill()
	if err := v.Trim(ctx, 5000, 3<<20); err != nil {
		t.Fatal(err)
	}
	check("Trim (fallback)", 5000, 3<<20)
	if fd.fallocs != 2 {
		t.Errorf("fallback: %d fallocate attempts, want 2 (punch hole, zero range)", fd.fallocs)
	}
	// Other fallocate errors are reported.
	fd.failFalloc = syscall.EIO
	if err := v.WriteZeroes(ctx, 0, 1<<20, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("WriteZeroes with EIO: %v", err)
	}
}

func TestOutOfRangeAndClosed(t *testing.T) {
	ctx := t.Context()
	const size = 1 << 20
	v, _ := newVolume(t, size, CreateOptions{})
	buf := make([]byte, 10)
	for name, err := range map[string]error{
		"read past end":   second(v.ReadAt(ctx, buf, size-5)),
		"read negative":   second(v.ReadAt(ctx, buf, -1)),
		"write past end":  second(v.WriteAt(ctx, buf, size-5, 0)),
		"write at end":    second(v.WriteAt(ctx, buf[:1], size, 0)),
		"trim past end":   v.Trim(ctx, size-4096, 8192),
		"zeroes negative": v.WriteZeroes(ctx, 0, -1, 0),
		"checksum":        second(v.ChecksumRange(ctx, 0, size+1, 4096)),
		"mark dirty":      v.MarkDirty(ctx, 0, size, 1),
		"clear dirty":     v.ClearDirty(ctx, 0, -5, 10),
	} {
		if !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%s: %v, want ErrOutOfRange", name, err)
		}
	}
	if n, err := v.WriteAt(ctx, buf, size-5, 0); n != 0 || !strings.Contains(err.Error(), "[1048571, +10)") {
		t.Errorf("out-of-range write: n=%d, err %v does not name the range", n, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := v.WriteAt(cctx, buf, 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"read":         second(v.ReadAt(ctx, buf, 0)),
		"write":        second(v.WriteAt(ctx, buf, 0, 0)),
		"flush":        v.Flush(ctx),
		"trim":         v.Trim(ctx, 0, 4096),
		"zeroes":       v.WriteZeroes(ctx, 0, 4096, 0),
		"checksum":     second(v.ChecksumRange(ctx, 0, 4096, 4096)),
		"mark dirty":   v.MarkDirty(ctx, 0, 0, 1),
		"clear dirty":  v.ClearDirty(ctx, 0, 0, 1),
		"set all":      v.SetAllDirty(ctx, 0),
		"set epoch":    v.SetEpoch(ctx, 5),
		"assign peer":  v.AssignPeer(ctx, 0, "x"),
		"set state":    v.SetDiskState(ctx, DiskUpToDate),
		"set gens":     v.SetGenerations(ctx, Generations{Current: 1}),
		"set peer flg": v.SetPeerFlags(ctx, 0, 1),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestReadOnly(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 1<<20, CreateOptions{})
	if _, err := v.WriteAt(ctx, []byte("hello"), 10, FUA); err != nil {
		t.Fatal(err)
	}
	v.Close()
	ro, err := Open(path, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	got := make([]byte, 5)
	if _, err := ro.ReadAt(ctx, got, 10); err != nil || string(got) != "hello" {
		t.Fatalf("read-only read: %q, %v", got, err)
	}
	for name, err := range map[string]error{
		"write":      second(ro.WriteAt(ctx, got, 0, 0)),
		"trim":       ro.Trim(ctx, 0, 4096),
		"mark dirty": ro.MarkDirty(ctx, 0, 0, 1),
		"set epoch":  ro.SetEpoch(ctx, 3),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on read-only volume: %v", name, err)
		}
	}
	if err := ro.Flush(ctx); err != nil {
		t.Errorf("Flush on read-only volume: %v", err)
	}
}

func TestChecksumRange(t *testing.T) {
	ctx := t.Context()
	const size = 3 << 20
	v, _ := newVolume(t, size, CreateOptions{})
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := v.WriteAt(ctx, data, 0, 0); err != nil {
		t.Fatal(err)
	}
	tab := crc64.MakeTable(crc64.ECMA)
	for _, c := range []struct{ off, n, bs int64 }{
		{0, size, 4096},
		{0, size, 64 << 10},
		{123, size - 1000, 5000},      // unaligned everything
		{4096, 2<<20 + 17, 3 << 20},   // one short block larger than a bounce chunk
		{size - 100, 100, 4096},       // tail
		{0, 0, 4096},                  // empty
		{777, 1<<20 + 3, 1<<20 + 999}, // blocks spanning read windows
	} {
		got, err := v.ChecksumRange(ctx, c.off, c.n, c.bs)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for o := c.off; o < c.off+c.n; o += c.bs {
			e := min(o+c.bs, c.off+c.n)
			want = append(want, crc64.Checksum(data[o:e], tab))
		}
		if len(got) != len(want) {
			t.Fatalf("%+v: %d checksums, want %d", c, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%+v: checksum %d = %#x, want %#x", c, i, got[i], want[i])
			}
		}
	}
	if _, err := v.ChecksumRange(ctx, 0, 10, 0); err == nil {
		t.Fatal("block length 0 accepted")
	}
}

// TestInjectedDiskErrors covers error paths through the diskFile seam; the
// same paths against a real failing block device are in
// TestDeviceIOErrors.
func TestInjectedDiskErrors(t *testing.T) {
	ctx := t.Context()
	v, _ := newVolume(t, 1<<20, CreateOptions{})
	fd := inject(v)
	failAt := func(lo, hi int64) func(int64, int) error {
		return func(off int64, n int) error {
			if off < hi && off+int64(n) > lo {
				return &os.PathError{Op: "write", Path: v.path, Err: syscall.EIO}
			}
			return nil
		}
	}
	fd.failWrite = failAt(8192, 12288)
	fd.failRead = failAt(16384, 20480)
	for _, c := range []struct {
		name string
		call func() (int, error)
	}{
		{"aligned write", func() (int, error) { return v.WriteAt(ctx, alignedBuf(4096), 8192, 0) }},
		{"unaligned write", func() (int, error) { return v.WriteAt(ctx, make([]byte, 10), 9000, FUA) }},
		{"RMW head read", func() (int, error) { return v.WriteAt(ctx, make([]byte, 10), 16390, 0) }},
		{"read", func() (int, error) { return v.ReadAt(ctx, make([]byte, 8192), 16384) }},
	} {
		n, err := c.call()
		if n != 0 || !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: n=%d err=%v; want 0 and EIO", c.name, n, err)
			continue
		}
		if !strings.Contains(err.Error(), v.path) || !strings.Contains(err.Error(), "[") {
			t.Errorf("%s: error %q does not name the volume and range", c.name, err)
		}
	}
	// Untouched ranges still work, but durability cannot be promised any
	// more after the failed RWF_DSYNC write.
	if _, err := v.WriteAt(ctx, make([]byte, 100), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Flush after a failed FUA write: %v", err)
	}
}

func TestDirectPathSelection(t *testing.T) {
	v, _ := newVolume(t, 1<<20, CreateOptions{})
	buf := alignedBuf(2 * 4096)
	for _, c := range []struct {
		p    []byte
		off  int64
		want bool
	}{
		{buf[:4096], 0, true},
		{buf, 4096, true},
		{buf[:4096], 100, false},
		{buf[:100], 0, false},
		{buf[1 : 1+4096], 0, false},
	} {
		if got := v.directOK(c.p, c.off); got != c.want {
			t.Errorf("directOK(len %d, off %d, addr%%4096=%d) = %v", len(c.p), c.off, len(buf)-cap(c.p), got)
		}
	}
}
