package rangelock

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

type spec struct {
	start, end int64
	mode       Mode
}

// TestGrantAtEnqueue enqueues requests in order, none released, and checks
// which are granted at once: exactly those no earlier request conflicts
// with.
func TestGrantAtEnqueue(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reqs    []spec
		granted []bool
	}{
		{"disjoint", []spec{{0, 10, 0}, {10, 20, 0}, {30, 40, 0}}, []bool{true, true, true}},
		{"overlap", []spec{{0, 10, 0}, {9, 20, 0}}, []bool{true, false}},
		{"behind a waiter", []spec{{0, 10, 0}, {5, 15, 0}, {12, 30, 0}}, []bool{true, false, false}},
		{"empty range inside another", []spec{{0, 10, 0}, {5, 5, 0}}, []bool{true, false}},
		{"empty range at the end", []spec{{0, 10, 0}, {10, 10, 0}}, []bool{true, true}},
		{"after all", []spec{{0, 10, 0}, {100, 100, AfterAll}, {20, 30, 0}}, []bool{true, false, true}},
		{"after all, first", []spec{{100, 100, AfterAll}, {0, 10, 0}}, []bool{true, true}},
		{"two after all", []spec{{0, 0, AfterAll}, {0, 0, AfterAll}}, []bool{true, false}},
		{"before all", []spec{{0, 0, BeforeAll}, {20, 30, 0}, {5, 5, 0}}, []bool{true, false, false}},
		{"barrier", []spec{{0, 10, 0}, {0, 0, Barrier}, {50, 60, 0}}, []bool{true, false, false}},
		{"barrier alone", []spec{{0, 0, Barrier}}, []bool{true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Lock[int]
			for i, s := range tc.reqs {
				r := l.Enqueue(s.start, s.end, s.mode, i)
				if got := r.wake == nil; got != tc.granted[i] {
					t.Errorf("request %d %+v: granted %v, want %v", i, s, got, tc.granted[i])
				}
			}
		})
	}
}

// TestReleaseOrder releases requests one by one and checks which waiting
// ones each release grants.
func TestReleaseOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		reqs []spec
		// steps[i] releases request release[i], after which exactly
		// grants[i] (indices) must have become granted.
		release []int
		grants  [][]int
	}{
		{
			name:    "fifo chain",
			reqs:    []spec{{0, 10, 0}, {5, 15, 0}, {12, 30, 0}, {40, 50, 0}},
			release: []int{0, 1},
			grants:  [][]int{{1}, {2}},
		},
		{
			name:    "one release grants two",
			reqs:    []spec{{0, 100, 0}, {0, 10, 0}, {50, 60, 0}},
			release: []int{0},
			grants:  [][]int{{1, 2}},
		},
		{
			name:    "flush waits for all, later writes do not wait for it",
			reqs:    []spec{{0, 10, 0}, {20, 30, 0}, {0, 0, AfterAll}, {40, 50, 0}},
			release: []int{1, 0},
			grants:  [][]int{nil, {2}},
		},
		{
			name:    "barrier holds later requests",
			reqs:    []spec{{0, 10, 0}, {0, 0, Barrier}, {40, 50, 0}, {60, 70, 0}},
			release: []int{0, 1},
			grants:  [][]int{{1}, {2, 3}},
		},
		{
			name:    "released waiter unblocks nothing early",
			reqs:    []spec{{0, 10, 0}, {5, 15, 0}, {12, 20, 0}},
			release: []int{1}, // as a cancelled Wait does
			grants:  [][]int{{2}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Lock[int]
			rs := make([]*Req[int], len(tc.reqs))
			wasGranted := make([]bool, len(tc.reqs))
			for i, s := range tc.reqs {
				rs[i] = l.Enqueue(s.start, s.end, s.mode, i)
				wasGranted[i] = rs[i].wake == nil
			}
			for step, i := range tc.release {
				l.Release(rs[i])
				rs[i] = nil
				var got []int
				for j, r := range rs {
					if r != nil && !wasGranted[j] && isClosed(r.wake) {
						got = append(got, j)
						wasGranted[j] = true
					}
				}
				if !slices.Equal(got, tc.grants[step]) {
					t.Errorf("release of %d granted %v, want %v", i, got, tc.grants[step])
				}
			}
		})
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestConflictingAndIdle(t *testing.T) {
	var l Lock[string]
	if !l.Idle() {
		t.Fatal("zero lock not idle")
	}
	a := l.Enqueue(0, 10, 0, "a")
	b := l.Enqueue(20, 30, 0, "b")
	f := l.Enqueue(0, 0, BeforeAll, "f")
	for _, tc := range []struct {
		start, end int64
		mode       Mode
		want       []string
	}{
		{5, 25, 0, []string{"a", "b", "f"}},
		{40, 50, 0, []string{"f"}},
		{40, 50, AfterAll, []string{"a", "b", "f"}},
	} {
		if got := l.Conflicting(tc.start, tc.end, tc.mode); !slices.Equal(got, tc.want) {
			t.Errorf("Conflicting(%d, %d, %d) = %v, want %v", tc.start, tc.end, tc.mode, got, tc.want)
		}
	}
	l.Release(a)
	l.Release(b)
	if l.Idle() {
		t.Fatal("idle with a request in it")
	}
	l.Release(f)
	if !l.Idle() {
		t.Fatal("not idle after every release")
	}
}

func TestWaitCancel(t *testing.T) {
	var l Lock[int]
	a := l.Enqueue(0, 10, 0, 0)
	ctx, cancel := context.WithCancel(t.Context())
	b := l.Enqueue(0, 10, 0, 1)
	c := l.Enqueue(5, 20, 0, 2) // behind b
	cancel()
	if err := l.Wait(ctx, b); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: %v", err)
	}
	if isClosed(c.wake) {
		t.Fatal("c granted while a holds an overlapping range")
	}
	l.Release(a)
	if err := l.Wait(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	l.Release(c)
	if !l.Idle() {
		t.Fatal("not idle")
	}
}

// TestConcurrent runs many goroutines taking random ranges (a few of them
// barriers) and checks the two promises: no two conflicting requests are
// held at once, and conflicting requests are granted in enqueue order.
func TestConcurrent(t *testing.T) {
	const workers, perWorker, space = 8, 300, 64
	var (
		l       Lock[int]
		seqMu   sync.Mutex // fixes enqueue order, as the primary's lock does
		nextSeq int
		heldMu  sync.Mutex
		held    = map[int]spec{}
		granted []int // seq numbers in grant order
		wg      sync.WaitGroup
	)
	all := make([]spec, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWorker {
				var s spec
				switch rnd.IntN(20) {
				case 0:
					s.mode = Barrier
				case 1:
					s.mode = AfterAll
				default:
					s.start = rnd.Int64N(space)
					s.end = s.start + 1 + rnd.Int64N(8)
				}
				seqMu.Lock()
				seq := nextSeq
				nextSeq++
				all[seq] = s
				r := l.Enqueue(s.start, s.end, s.mode, seq)
				seqMu.Unlock()
				if err := l.Wait(t.Context(), r); err != nil {
					t.Error(err)
					return
				}
				heldMu.Lock()
				for o, os := range held {
					e, lt := &Req[int]{start: os.start, end: os.end, mode: os.mode}, &Req[int]{start: s.start, end: s.end, mode: s.mode}
					if o > seq {
						e, lt = lt, e
					}
					if conflicts(e, lt) {
						t.Errorf("requests %d %+v and %d %+v held at once", o, os, seq, s)
					}
				}
				held[seq] = s
				granted = append(granted, seq)
				heldMu.Unlock()
				if rnd.IntN(4) == 0 {
					time.Sleep(time.Duration(rnd.IntN(50)) * time.Microsecond)
				}
				heldMu.Lock()
				delete(held, seq)
				heldMu.Unlock()
				l.Release(r)
			}
		})
	}
	wg.Wait()
	// Grant order respects enqueue order among conflicting requests.
	pos := make([]int, len(all))
	for i, seq := range granted {
		pos[seq] = i
	}
	for i := range all {
		for j := i + 1; j < len(all) && j < i+64; j++ {
			a, b := &Req[int]{start: all[i].start, end: all[i].end, mode: all[i].mode}, &Req[int]{start: all[j].start, end: all[j].end, mode: all[j].mode}
			if conflicts(a, b) && pos[j] < pos[i] {
				t.Fatalf("request %d %+v granted before the earlier conflicting %d %+v", j, all[j], i, all[i])
			}
		}
	}
	if !l.Idle() {
		t.Fatal("not idle at the end")
	}
}

func BenchmarkUncontended(b *testing.B) {
	var l Lock[struct{}]
	ctx := context.Background()
	for i := range b.N {
		off := int64(i%32) * 4096
		r, _ := l.Acquire(ctx, off, off+4096, 0, struct{}{})
		l.Release(r)
	}
}
