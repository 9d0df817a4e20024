package netdelay

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder stands in for the kernel's verdicts: when each packet was
// accepted, in the order of acceptance.
type recorder struct {
	mu  sync.Mutex
	ids []uint32
	at  map[uint32]time.Time
}

func (r *recorder) accept(id uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	r.at[id] = time.Now()
	return nil
}

func (r *recorder) snapshot() ([]uint32, map[uint32]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids), r.at
}

// TestReleaseOrderAndFloor: packets enqueued in bursts are accepted in
// the order they came, none before the delay after it came (a floor, on
// any machine), and Release lets the held ones and later ones go at once,
// still in order, as Close does with what is left.
func TestReleaseOrderAndFloor(t *testing.T) {
	const delay = 30 * time.Millisecond
	rec := &recorder{at: map[uint32]time.Time{}}
	d := newDelayer(Config{Delay: delay}, rec.accept)
	came := map[uint32]time.Time{}
	id := uint32(0)
	for burst := range 5 {
		for range 50 {
			id++
			came[id] = time.Now()
			d.enqueue(id)
		}
		time.Sleep(time.Duration(burst) * 5 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, _ := rec.snapshot()
		if len(ids) == int(id) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ids, at := rec.snapshot()
	if len(ids) != int(id) || !slices.IsSorted(ids) {
		t.Fatalf("accepted %d of %d, in order: %v", len(ids), id, slices.IsSorted(ids))
	}
	for _, i := range ids {
		if held := at[i].Sub(came[i]); held < delay {
			t.Fatalf("packet %d accepted after %s, below the delay %s", i, held, delay)
		}
	}

	// A long delay, then Release: what is held goes at once, in order,
	// and so does what comes after.
	rec2 := &recorder{at: map[uint32]time.Time{}}
	d2 := newDelayer(Config{Delay: time.Hour}, rec2.accept)
	for i := uint32(1); i <= 100; i++ {
		d2.enqueue(i)
	}
	time.Sleep(20 * time.Millisecond)
	if ids, _ := rec2.snapshot(); len(ids) != 0 {
		t.Fatalf("%d packets accepted before their hour", len(ids))
	}
	d2.Release()
	for i := uint32(101); i <= 200; i++ {
		d2.enqueue(i)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		ids, _ := rec2.snapshot()
		if len(ids) == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if ids, _ := rec2.snapshot(); len(ids) != 200 || !slices.IsSorted(ids) {
		t.Fatalf("after Release: accepted %d of 200, in order: %v", len(ids), slices.IsSorted(ids))
	}

	// Close with packets held: all accepted, in order, before it returns.
	rec3 := &recorder{at: map[uint32]time.Time{}}
	d3 := newDelayer(Config{Delay: time.Hour}, rec3.accept)
	for i := uint32(1); i <= 100; i++ {
		d3.enqueue(i)
	}
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := rec3.snapshot(); len(ids) != 100 || !slices.IsSorted(ids) {
		t.Fatalf("Close: accepted %d of 100, in order: %v", len(ids), slices.IsSorted(ids))
	}
	for _, x := range []*Delayer{d, d2} {
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if q, r, f := d.Stats(); q != uint64(id) || r != q || f != 0 {
		t.Fatalf("stats %d %d %d", q, r, f)
	}
}
