package blockstore

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

type run struct{ off, n int64 }

func ranges(v *LocalVolume, peer int) []run {
	var out []run
	v.DirtyRanges(peer, func(off, n int64) bool {
		out = append(out, run{off, n})
		return true
	})
	return out
}

func TestBitmapGranularityEdges(t *testing.T) {
	ctx := t.Context()
	const g = 64 << 10
	const size = 10*g + 4096 // the last region is partial
	v, path := newVolume(t, size, CreateOptions{Granularity: g})
	expect := func(what string, want []run, wantBytes int64) {
		t.Helper()
		if got := ranges(v, 0); !slices.Equal(got, want) {
			t.Fatalf("%s: DirtyRanges = %v, want %v", what, got, want)
		}
		if got := v.DirtyBytes(0); got != wantBytes {
			t.Fatalf("%s: DirtyBytes = %d, want %d", what, got, wantBytes)
		}
	}
	expect("fresh", nil, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.MarkDirty(ctx, 0, 0, 1))
	expect("one byte", []run{{0, g}}, g)
	must(v.MarkDirty(ctx, 0, size-1, 1))
	expect("last byte", []run{{0, g}, {10 * g, 4096}}, g+4096)
	must(v.MarkDirty(ctx, 0, 2*g-1, 2)) // touches regions 1 and 2
	expect("straddle", []run{{0, 3 * g}, {10 * g, 4096}}, 3*g+4096)
	must(v.MarkDirty(ctx, 0, 5*g, 0)) // empty range: nothing
	expect("empty", []run{{0, 3 * g}, {10 * g, 4096}}, 3*g+4096)
	// Clearing only whole regions.
	must(v.ClearDirty(ctx, 0, 1, g)) // no region entirely inside
	expect("partial clear", []run{{0, 3 * g}, {10 * g, 4096}}, 3*g+4096)
	must(v.ClearDirty(ctx, 0, g, g))
	expect("clear region 1", []run{{0, g}, {2 * g, g}, {10 * g, 4096}}, 2*g+4096)
	must(v.ClearDirty(ctx, 0, 10*g, 100)) // part of the partial last region
	expect("partial last", []run{{0, g}, {2 * g, g}, {10 * g, 4096}}, 2*g+4096)
	must(v.ClearDirty(ctx, 0, 10*g, 4096)) // reaches the end: counts as whole
	expect("clear last", []run{{0, g}, {2 * g, g}}, 2*g)
	must(v.ClearDirty(ctx, 0, 100, size-100)) // all but region 0
	expect("clear tail", []run{{0, g}}, g)
	// The other peer is independent.
	if v.DirtyBytes(1) != 0 || ranges(v, 1) != nil {
		t.Fatal("peer 1 picked up peer 0's bits")
	}
	must(v.SetAllDirty(ctx, 1))
	if got := ranges(v, 1); !slices.Equal(got, []run{{0, size}}) || v.DirtyBytes(1) != size {
		t.Fatalf("SetAllDirty: %v, %d", got, v.DirtyBytes(1))
	}
	// Early stop.
	calls := 0
	v.DirtyRanges(1, func(int64, int64) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("DirtyRanges called fn %d times after it returned false", calls)
	}
	// Bad slots.
	if err := v.MarkDirty(ctx, 2, 0, 1); err == nil {
		t.Fatal("MarkDirty on slot 2 of 2 succeeded")
	}
	if v.DirtyBytes(-1) != 0 || v.DirtyBytes(7) != 0 {
		t.Fatal("DirtyBytes of an invalid slot")
	}
	// Everything persists across Close.
	must(v.Close())
	v = mustOpen(t, path)
	expect("reopened", []run{{0, g}}, g)
	if v.DirtyBytes(1) != size {
		t.Fatalf("reopened peer 1: %d", v.DirtyBytes(1))
	}
}

// TestBitmapModel runs random MarkDirty/ClearDirty against a model on a
// volume whose bitmap spans several 4 KiB blocks per peer, with reopening,
// crashes after Flush, and checks every run and count.
func TestBitmapModel(t *testing.T) {
	ctx := t.Context()
	const g = 4096
	const regions = 2*bitsPerBlock + 1000 // three bitmap blocks per peer
	const size = regions * g
	v, path := newVolume(t, size, CreateOptions{Granularity: g, MaxPeers: 2})
	if v.lay.blocksPerPeer != 3 {
		t.Fatalf("blocks per peer = %d", v.lay.blocksPerPeer)
	}
	model := [2][]bool{make([]bool, regions), make([]bool, regions)}
	rng := rand.New(rand.NewPCG(7, 8))
	check := func(when string) {
		t.Helper()
		for p := range 2 {
			var want []run
			var bytes int64
			for r := int64(0); r < regions; r++ {
				if !model[p][r] {
					continue
				}
				bytes += g
				if k := len(want) - 1; k >= 0 && want[k].off+want[k].n == r*g {
					want[k].n += g
				} else {
					want = append(want, run{r * g, g})
				}
			}
			if got := ranges(v, p); !slices.Equal(got, want) {
				t.Fatalf("%s: peer %d: %d runs, want %d", when, p, len(got), len(want))
			}
			if got := v.DirtyBytes(p); got != bytes {
				t.Fatalf("%s: peer %d: DirtyBytes %d, want %d", when, p, got, bytes)
			}
		}
	}
	for i := range 600 {
		p := rng.IntN(2)
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(min(size-off, []int64{g, 70 * g, 40000 * g}[rng.IntN(3)]))
		if rng.IntN(3) > 0 {
			if err := v.MarkDirty(ctx, p, off, n); err != nil {
				t.Fatal(err)
			}
			for r := off / g; r <= (off+n-1)/g; r++ {
				model[p][r] = true
			}
		} else {
			if err := v.ClearDirty(ctx, p, off, n); err != nil {
				t.Fatal(err)
			}
			for r := (off + g - 1) / g; r < (off+n)/g; r++ {
				model[p][r] = false
			}
		}
		switch i % 150 {
		case 50:
			check("live")
		case 100:
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			v = mustOpen(t, path)
			check("after reopen")
		case 149:
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			crash(v)
			v = mustOpen(t, path)
			check("after flush and crash")
		}
	}
}

func TestDirtyBitsSurviveCrash(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 8<<20, CreateOptions{})
	if err := v.MarkDirty(ctx, 1, 3<<20, 100); err != nil {
		t.Fatal(err)
	}
	if err := v.MarkDirty(ctx, 0, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := v.ClearDirty(ctx, 0, 0, 64<<10); err != nil {
		t.Fatal(err)
	}
	crash(v) // no Close: deferred clears are lost, marks are not
	v = mustOpen(t, path)
	if got := ranges(v, 1); !slices.Equal(got, []run{{3 << 20, 64 << 10}}) {
		t.Fatalf("after crash: peer 1 ranges %v", got)
	}
	if got := ranges(v, 0); !slices.Equal(got, []run{{0, 64 << 10}}) {
		t.Fatalf("after crash: an unflushed clear may only bring bits back, got %v", got)
	}
	if err := v.SetAllDirty(ctx, 0); err != nil {
		t.Fatal(err)
	}
	crash(v)
	v = mustOpen(t, path)
	if v.DirtyBytes(0) != 8<<20 {
		t.Fatalf("SetAllDirty did not survive a crash: %d", v.DirtyBytes(0))
	}
}

func TestMarkDirtyIO(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 1<<30, CreateOptions{Granularity: 4096}) // 8 bitmap blocks per peer
	fd := inject(v)
	if err := v.MarkDirty(ctx, 0, 0, 3*4096); err != nil {
		t.Fatal(err)
	}
	if _, w, s := fd.counts(); w != 1 || s != 1 {
		t.Fatalf("first MarkDirty: %d writes, %d syncs; want 1, 1", w, s)
	}
	for range 100 {
		if err := v.MarkDirty(ctx, 0, 100, 3000); err != nil {
			t.Fatal(err)
		}
	}
	if _, w, s := fd.counts(); w != 1 || s != 1 {
		t.Fatalf("MarkDirty on set bits did I/O: %d writes, %d syncs", w, s)
	}
	// A range spanning bitmap blocks 1-3 (each covers 32704×4 KiB =
	// 127.75 MiB): three writes, one sync.
	if err := v.MarkDirty(ctx, 0, 128<<20, 256<<20); err != nil {
		t.Fatal(err)
	}
	if _, w, s := fd.counts(); w != 4 || s != 2 {
		t.Fatalf("three-block MarkDirty: %d writes, %d syncs total; want 4, 2", w, s)
	}
	// Clearing is lazy; Flush writes it.
	if err := v.ClearDirty(ctx, 0, 0, 8192); err != nil {
		t.Fatal(err)
	}
	if _, w, _ := fd.counts(); w != 4 {
		t.Fatal("ClearDirty wrote")
	}
	// Marking an already-set bit in a block with only a pending clear needs
	// no I/O either.
	if err := v.MarkDirty(ctx, 0, 2*4096, 1); err != nil {
		t.Fatal(err)
	}
	if _, w, _ := fd.counts(); w != 4 {
		t.Fatal("MarkDirty on a set bit waited for a lazy clear")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, w, _ := fd.counts(); w != 5 {
		t.Fatalf("Flush: %d writes total, want 5", w)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, w, _ := fd.counts(); w != 5 {
		t.Fatal("second Flush rewrote bitmap blocks")
	}

	// A failed bitmap write fails MarkDirty, and a later MarkDirty of the
	// same (in-memory set) bit must not succeed without writing it.
	fd.mu.Lock()
	fd.failWrite = func(off int64, n int) error {
		if off >= v.lay.bitmapOff {
			return syscall.EIO
		}
		return nil
	}
	fd.mu.Unlock()
	if err := v.MarkDirty(ctx, 1, 0, 1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("MarkDirty with failing disk: %v", err)
	}
	if err := v.MarkDirty(ctx, 1, 0, 1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("MarkDirty retry with failing disk: %v (it must not trust the unwritten bit)", err)
	}
	fd.mu.Lock()
	fd.failWrite = nil
	fd.mu.Unlock()
	if err := v.MarkDirty(ctx, 1, 0, 1); err != nil {
		t.Fatal(err)
	}
	crash(v)
	v = mustOpen(t, path)
	if v.DirtyBytes(1) != 4096 {
		t.Fatalf("after recovery and crash: DirtyBytes(1) = %d", v.DirtyBytes(1))
	}
}

// TestMarkDirtyWaitsForInFlightWrite: while one MarkDirty is writing a
// block, another MarkDirty of a bit that write carries must not return
// before the write is durable, even though the bit is already set in
// memory.
func TestMarkDirtyWaitsForInFlightWrite(t *testing.T) {
	ctx := t.Context()
	v, _ := newVolume(t, 1<<20, CreateOptions{})
	fd := inject(v)
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	fd.beforeWrite = func(off int64) {
		if off >= v.lay.bitmapOff {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
	}
	first := make(chan error, 1)
	go func() { first <- v.MarkDirty(ctx, 0, 0, 1) }()
	<-entered
	second := make(chan error, 1)
	go func() { second <- v.MarkDirty(ctx, 0, 10, 1) }()
	select {
	case err := <-second:
		t.Fatalf("second MarkDirty returned (%v) while the block write was still in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

func TestMarkDirtyConcurrent(t *testing.T) {
	ctx := t.Context()
	const g = 4096
	v, path := newVolume(t, 200<<20, CreateOptions{Granularity: g, MaxPeers: 2})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 200 {
				off := rng.Int64N(200<<20) &^ (g - 1)
				if err := v.MarkDirty(ctx, w%2, off, g); err != nil {
					t.Error(err)
					return
				}
				if rng.IntN(4) == 0 {
					v.DirtyBytes(w % 2)
				}
			}
		}()
	}
	wg.Wait()
	want := [2]int64{v.DirtyBytes(0), v.DirtyBytes(1)}
	wantRuns := [2][]run{ranges(v, 0), ranges(v, 1)}
	crash(v)
	v = mustOpen(t, path)
	for p := range 2 {
		if v.DirtyBytes(p) != want[p] || !slices.Equal(ranges(v, p), wantRuns[p]) {
			t.Fatalf("peer %d after crash: %d dirty bytes, want %d", p, v.DirtyBytes(p), want[p])
		}
	}
}

func TestAssignPeerMarksAllDirty(t *testing.T) {
	ctx := t.Context()
	v, path := newVolume(t, 4<<20, CreateOptions{})
	if err := v.AssignPeer(ctx, 1, "node-c"); err != nil {
		t.Fatal(err)
	}
	if v.DirtyBytes(1) != 4<<20 {
		t.Fatalf("new peer: DirtyBytes = %d, want everything", v.DirtyBytes(1))
	}
	if err := v.ClearDirty(ctx, 1, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := v.AssignPeer(ctx, 1, "node-c"); err != nil {
		t.Fatal(err)
	}
	if v.DirtyBytes(1) != 0 {
		t.Fatal("re-assigning the same name dirtied the bitmap")
	}
	if err := v.AssignPeer(ctx, 1, "node-d"); err != nil {
		t.Fatal(err)
	}
	if v.DirtyBytes(1) != 4<<20 {
		t.Fatal("a different peer did not get an all-dirty bitmap")
	}
	crash(v)
	v = mustOpen(t, path)
	if v.Meta().Peers[1].Name != "node-d" || v.DirtyBytes(1) != 4<<20 {
		t.Fatalf("after crash: %+v, %d", v.Meta().Peers, v.DirtyBytes(1))
	}
}

func TestNextRun(t *testing.T) {
	words := []uint64{0, 1 << 63, 0xF, 0, ^uint64(0), ^uint64(0)}
	var got [][2]int64
	for r := int64(0); ; {
		s, e, ok := nextRun(words, r, 6*64-10)
		if !ok {
			break
		}
		got = append(got, [2]int64{s, e})
		r = e
	}
	want := [][2]int64{{127, 132}, {256, 374}}
	if !slices.Equal(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
}
