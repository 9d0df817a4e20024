package blockstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
)

// growFixture writes a recognisable block at the start and at the last
// block of a volume and marks a few dirty ranges, so a grow can be checked
// for keeping both.
type growFixture struct {
	oldSize int64
	first   []byte
	last    []byte
	dirty   map[int][][2]int64 // peer slot -> ranges
}

func fillBlock(b byte) []byte {
	p := alignedBuf(blockSize)
	for i := range p {
		p[i] = b + byte(i%7)
	}
	return p
}

func prepareGrow(t *testing.T, v *LocalVolume) *growFixture {
	t.Helper()
	ctx := context.Background()
	fx := &growFixture{oldSize: v.Size(), first: fillBlock(0x11), last: fillBlock(0x77), dirty: map[int][][2]int64{}}
	if _, err := v.WriteAt(ctx, fx.first, 0, FUA); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, fx.last, fx.oldSize-blockSize, FUA); err != nil {
		t.Fatal(err)
	}
	g := v.Meta().Granularity
	fx.dirty[0] = [][2]int64{{0, g}, {fx.oldSize - g, g}}
	fx.dirty[1] = [][2]int64{{3 * g, 2 * g}}
	for p, rs := range fx.dirty {
		for _, r := range rs {
			if err := v.MarkDirty(ctx, p, r[0], r[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fx
}

// check verifies v holds the fixture at size want: the old data, zeroes
// past the old size, and exactly the old dirty ranges.
func (fx *growFixture) check(t *testing.T, v *LocalVolume, want int64) {
	t.Helper()
	ctx := context.Background()
	if got := v.Size(); got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
	if m := v.Meta(); m.Size != want {
		t.Fatalf("Meta().Size = %d, want %d", m.Size, want)
	}
	buf := alignedBuf(blockSize)
	for _, c := range []struct {
		off  int64
		want []byte
	}{{0, fx.first}, {fx.oldSize - blockSize, fx.last}} {
		if _, err := v.ReadAt(ctx, buf, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, c.want) {
			t.Fatalf("data at %d changed by the grow", c.off)
		}
	}
	if want > fx.oldSize {
		// Every byte past the old end reads zero (the old metadata area
		// included).
		rest := alignedBuf(int(want - fx.oldSize))
		if _, err := v.ReadAt(ctx, rest, fx.oldSize); err != nil {
			t.Fatal(err)
		}
		if !allZero(rest) {
			i := bytes.IndexFunc(rest, func(r rune) bool { return r != 0 })
			t.Fatalf("byte %d past the old end (offset %d) is not zero after the grow", i, fx.oldSize+int64(i))
		}
	}
	for p := range 2 {
		var got [][2]int64
		v.DirtyRanges(p, func(off, length int64) bool { got = append(got, [2]int64{off, length}); return true })
		if fmt.Sprint(got) != fmt.Sprint(fx.dirty[p]) {
			t.Fatalf("peer slot %d dirty ranges %v, want %v", p, got, fx.dirty[p])
		}
	}
	if _, err := os.Stat(v.Path() + growSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("grow record still there: %v", err)
	}
	fi, err := os.Stat(v.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != v.lay.devSize {
		t.Fatalf("file is %d bytes, the layout says %d", fi.Size(), v.lay.devSize)
	}
}

func TestGrowKeepsDataAndBitmaps(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name       string
		size, grow int64
		gran       int64
	}{
		{"double", 1 << 20, 2 << 20, 4096},
		{"one block", 1 << 20, 1<<20 + 4096, 4096}, // smaller than the metadata: the bitmaps land past the old file
		{"more bitmap blocks", 64 << 20, 256 << 20, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, path := newVolume(t, c.size, CreateOptions{Granularity: c.gran, MaxPeers: 2})
			fx := prepareGrow(t, v)
			if err := v.Grow(ctx, c.grow); err != nil {
				t.Fatal(err)
			}
			fx.check(t, v, c.grow)
			// Writes past the old end work and are marked in the bitmaps.
			p := fillBlock(0x42)
			if _, err := v.WriteAt(ctx, p, c.grow-blockSize, FUA); err != nil {
				t.Fatalf("write at the new end: %v", err)
			}
			if err := v.MarkDirty(ctx, 1, c.grow-blockSize, blockSize); err != nil {
				t.Fatalf("mark dirty at the new end: %v", err)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			w := mustOpen(t, path)
			if w.Size() != c.grow {
				t.Fatalf("reopened at %d bytes, want %d", w.Size(), c.grow)
			}
			buf := alignedBuf(blockSize)
			if _, err := w.ReadAt(ctx, buf, c.grow-blockSize); err != nil || !bytes.Equal(buf, p) {
				t.Fatalf("write at the new end lost after reopen (err %v)", err)
			}
			if got := w.DirtyBytes(1); got != 2*c.gran+blockSize {
				t.Fatalf("peer slot 1 has %d dirty bytes after reopen, want %d", got, 2*c.gran+blockSize)
			}
			// And it grows again.
			if err := w.Grow(ctx, c.grow+(8<<20)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestGrowRefusals(t *testing.T) {
	ctx := context.Background()
	v, path := newVolume(t, 1<<20, CreateOptions{})
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	for _, c := range []struct {
		size int64
		want string
	}{
		{1<<20 - 4096, "shrinking"},
		{1<<20 + 512, "multiple of 4096"},
		{MaxSize + 4096, "maximum"},
		{0, "multiple of 4096"},
	} {
		err := v.Grow(ctx, c.size)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Fatalf("Grow(%d) = %v, want an error containing %q", c.size, err, c.want)
		}
	}
	if err := v.Grow(ctx, 1<<20-4096); !errors.Is(err, ErrShrink) {
		t.Fatalf("shrink: %v, want ErrShrink", err)
	}
	if err := v.Grow(ctx, 1<<20); err != nil {
		t.Fatalf("grow to the same size: %v", err)
	}
	if v.Size() != 1<<20 {
		t.Fatalf("size changed to %d", v.Size())
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a refused grow changed the file")
	}
}

// TestGrowCrash stops Grow after each step as a crash would, reopens, and
// checks the volume is either the old one or the new one, whole.
func TestGrowCrash(t *testing.T) {
	ctx := context.Background()
	const size, grow = 1 << 20, 3 << 20
	errCrash := errors.New("crash")
	for step := 1; step <= 6; step++ {
		t.Run(fmt.Sprintf("after step %d", step), func(t *testing.T) {
			v, path := newVolume(t, size, CreateOptions{Granularity: 4096})
			fx := prepareGrow(t, v)
			err := v.grow(ctx, grow, func(n int) error {
				if n == step {
					return errCrash
				}
				return nil
			})
			if !errors.Is(err, errCrash) {
				t.Fatalf("grow: %v", err)
			}
			crash(v)
			w := mustOpen(t, path)
			want := int64(size)
			if step >= 5 {
				want = grow // the superblocks were written: committed
			}
			fx.check(t, w, want)
			if err := w.Grow(ctx, grow+(1<<20)); err != nil {
				t.Fatalf("grow after recovery: %v", err)
			}
			fx.check(t, w, grow+(1<<20))
		})
	}
}

// TestGrowUnderIO grows while writers and readers run (with -race, it
// checks the layout switch too).
func TestGrowUnderIO(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const size = 1 << 20
	v, _ := newVolume(t, size, CreateOptions{Granularity: 4096})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fillBlock(byte(w))
			for i := int64(0); ctx.Err() == nil; i++ {
				n := v.Size() / blockSize
				off := ((i*7 + int64(w)) % n) * blockSize
				if _, err := v.WriteAt(ctx, p, off, 0); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				if err := v.MarkDirty(ctx, 0, off, blockSize); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				_ = v.DirtyBytes(0)
			}
		}()
	}
	for i := int64(1); i <= 8; i++ {
		if err := v.Grow(ctx, size+i*(256<<10)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v.Size() != size+8*(256<<10) {
		t.Fatalf("size %d", v.Size())
	}
}

// TestGrowFailureUndoes: a disk error before the commit point (no space to
// extend, a failed bitmap write) undoes the grow at once: the volume keeps
// its size and data, the file its length, and no grow record is left.
func TestGrowFailureUndoes(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		set  func(fd *faultDisk, oldDev int64)
	}{
		{"no space", func(fd *faultDisk, _ int64) { fd.failFalloc = syscall.ENOSPC }},
		{"bitmap write", func(fd *faultDisk, oldDev int64) {
			fd.failWrite = func(off int64, _ int) error {
				if off >= oldDev {
					return syscall.EIO
				}
				return nil
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, path := newVolume(t, 1<<20, CreateOptions{Granularity: 4096})
			fx := prepareGrow(t, v)
			fd := inject(v)
			c.set(fd, v.lay.devSize)
			if err := v.Grow(ctx, 4<<20); err == nil {
				t.Fatal("grow succeeded on a failing disk")
			}
			fd.mu.Lock()
			fd.failFalloc, fd.failWrite = nil, nil
			fd.mu.Unlock()
			fx.check(t, v, 1<<20)
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fx.check(t, mustOpen(t, path), 1<<20)
		})
	}
}
