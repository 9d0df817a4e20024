package faultfs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOverlayModel drives the volatile cache of one real file with a
// seeded random mix of writes, truncates, punched ranges, syncs and power
// losses, against a model of two byte slices: what reads must return now,
// and what must survive a power loss.
func TestOverlayModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	fh, err := os.Create(filepath.Join(t.TempDir(), "backing"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fd := int(fh.Fd())
	var total atomic.Int64
	d := &dirtyFile{total: &total}
	var current, durable []byte
	const span = 6 * pageSize

	check := func(step int, what string) {
		t.Helper()
		size, err := d.size(fd)
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(current)) {
			t.Fatalf("step %d (%s): size %d, model %d", step, what, size, len(current))
		}
		got := make([]byte, len(current)+100)
		n, err := d.read(fd, got, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:n], current) {
			t.Fatalf("step %d (%s): read differs from the model", step, what)
		}
		if total.Load() != d.dirtyBytes() {
			t.Fatalf("step %d (%s): mount total %d, file %d", step, what, total.Load(), d.dirtyBytes())
		}
	}
	grow := func(b []byte, n int) []byte {
		if len(b) < n {
			b = append(b, make([]byte, n-len(b))...)
		}
		return b
	}
	for step := range 3000 {
		var what string
		switch op := rng.IntN(20); {
		case op < 13:
			what = "write"
			off := rng.IntN(span)
			data := make([]byte, 1+rng.IntN(2*pageSize))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if err := d.write(fd, data, int64(off)); err != nil {
				t.Fatal(err)
			}
			current = grow(current, off+len(data))
			copy(current[off:], data)
		case op < 15:
			what = "truncate"
			size := rng.IntN(span)
			if err := fh.Truncate(int64(size)); err != nil { // the backing side, as Setattr does
				t.Fatal(err)
			}
			d.truncate(int64(size))
			current = grow(current, size)[:size]
			durable = grow(durable, size)[:size]
			// Truncate is durable at once; bytes the model held beyond
			// size are gone from both.
			clear(current[len(current):cap(current)])
			clear(durable[len(durable):cap(durable)])
		case op < 16:
			what = "punch"
			off, n := rng.IntN(span), 1+rng.IntN(2*pageSize)
			if err := punch(fd, int64(off), int64(n)); err != nil {
				t.Fatal(err)
			}
			d.zero(int64(off), int64(n))
			if off < len(current) {
				clear(current[off:min(off+n, len(current))])
			}
			if off < len(durable) {
				clear(durable[off:min(off+n, len(durable))])
			}
		case op < 19:
			what = "sync"
			if err := d.sync(fd); err != nil {
				t.Fatal(err)
			}
			durable = append(durable[:0], current...)
		default:
			what = "power loss"
			d.drop()
			current = append(current[:0], durable...)
		}
		check(step, what)
	}
}

func punch(fd int, off, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}
