package nbd

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/blockstore"
)

// memVolume is an in-memory Volume that records what the server asked of
// it, so tests can check FUA, flushes and NO_HOLE reached the volume.
type memVolume struct {
	mu         sync.Mutex
	data       []byte
	writes     int // WriteAt calls
	fuaWrites  int
	flushes    int
	trims      int
	zeroes     int
	fuaZeroes  int
	noHoles    int
	lastWrites []writeRec // every write, trim and zeroing, in order

	frozen   atomic.Bool
	closed   atomic.Bool
	readOnly atomic.Bool
	delay    atomic.Int64 // nanoseconds each call sleeps, to hold requests in flight
	more     atomic.Int64 // writes hinted blockstore.More
}

type writeRec struct {
	op   uint16 // cmdWrite, cmdTrim or cmdWriteZeroes
	off  int64
	len  int64
	data []byte // for cmdWrite
}

func newMemVolume(size int) *memVolume { return &memVolume{data: make([]byte, size)} }

func (v *memVolume) gate(ctx context.Context, write bool) error {
	if d := time.Duration(v.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("mem volume: %w", ctx.Err())
		}
	}
	switch {
	case v.closed.Load():
		return fmt.Errorf("mem volume: %w", blockstore.ErrClosed)
	case v.frozen.Load():
		return fmt.Errorf("mem volume: %w", blockstore.ErrFrozen)
	case write && v.readOnly.Load():
		return fmt.Errorf("mem volume: %w", blockstore.ErrReadOnly)
	}
	return nil
}

// locked runs fn under the lock once the gate lets the call through and
// length bytes at off are inside the volume; what names the call in errors.
func (v *memVolume) locked(ctx context.Context, write bool, what string, off, length int64, fn func() int) (int, error) {
	if err := v.gate(ctx, write); err != nil {
		return 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := blockstore.CheckRange(int64(len(v.data)), off, length); err != nil {
		return 0, fmt.Errorf("mem volume %s: %w", what, err)
	}
	return fn(), nil
}

func (v *memVolume) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return v.locked(ctx, false, "read", off, int64(len(p)), func() int { return copy(p, v.data[off:]) })
}

func (v *memVolume) WriteAt(ctx context.Context, p []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	return v.locked(ctx, true, "write", off, int64(len(p)), func() int {
		v.writes++
		if flags&blockstore.More != 0 {
			v.more.Add(1)
		}
		if flags&blockstore.FUA != 0 {
			v.fuaWrites++
		}
		v.lastWrites = append(v.lastWrites, writeRec{op: cmdWrite, off: off, len: int64(len(p)), data: append([]byte(nil), p...)})
		return copy(v.data[off:], p)
	})
}

func (v *memVolume) Flush(ctx context.Context) error {
	if err := v.gate(ctx, false); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.flushes++
	return nil
}

func (v *memVolume) Trim(ctx context.Context, off, length int64) error {
	return v.clearRange(ctx, cmdTrim, "trim", off, length, func() { v.trims++ })
}

func (v *memVolume) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	return v.clearRange(ctx, cmdWriteZeroes, "zero", off, length, func() {
		v.zeroes++
		if flags&blockstore.FUA != 0 {
			v.fuaZeroes++
		}
		if flags&blockstore.NoHole != 0 {
			v.noHoles++
		}
	})
}

// clearRange is Trim and WriteZeroes: it zeroes length bytes at off and
// records them as op; count updates the counters, under the lock.
func (v *memVolume) clearRange(ctx context.Context, op uint16, what string, off, length int64, count func()) error {
	_, err := v.locked(ctx, true, what, off, length, func() int {
		count()
		v.lastWrites = append(v.lastWrites, writeRec{op: op, off: off, len: length})
		clear(v.data[off : off+length])
		return 0
	})
	return err
}

func (v *memVolume) Size() int64 { return int64(len(v.data)) }
func (v *memVolume) Close() error {
	v.closed.Store(true)
	return nil
}

// snapshot copies the contents and counters under the lock.
func (v *memVolume) snapshot() (data []byte, writes, fua, flushes, trims, zeroes, noHoles int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]byte(nil), v.data...), v.writes, v.fuaWrites, v.flushes, v.trims, v.zeroes, v.noHoles
}

func (v *memVolume) records() []writeRec {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]writeRec(nil), v.lastWrites...)
}

// mutations counts writes, trims and zeroings: one record each.
func (v *memVolume) mutations() int { return len(v.records()) }

// fileVolume is a Volume over a sparse file, for clients that move more
// data than is comfortable in memory.
type fileVolume struct {
	f    *os.File
	size int64
}

func newFileVolume(path string, size int64) (*fileVolume, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return &fileVolume{f: f, size: size}, nil
}

func (v *fileVolume) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if err := blockstore.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	return v.f.ReadAt(p, off)
}

func (v *fileVolume) WriteAt(_ context.Context, p []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	if err := blockstore.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := v.f.WriteAt(p, off)
	if err == nil && flags&blockstore.FUA != 0 {
		err = unix.Fdatasync(int(v.f.Fd()))
	}
	return n, err
}

func (v *fileVolume) Flush(context.Context) error { return v.f.Sync() }

func (v *fileVolume) Trim(_ context.Context, off, length int64) error {
	if err := blockstore.CheckRange(v.size, off, length); err != nil {
		return err
	}
	return unix.Fallocate(int(v.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func (v *fileVolume) WriteZeroes(_ context.Context, off, length int64, flags blockstore.WriteFlags) error {
	if err := blockstore.CheckRange(v.size, off, length); err != nil {
		return err
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if flags&blockstore.NoHole != 0 {
		mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	if err := unix.Fallocate(int(v.f.Fd()), mode, off, length); err != nil {
		return err
	}
	if flags&blockstore.FUA != 0 {
		return unix.Fdatasync(int(v.f.Fd()))
	}
	return nil
}

func (v *fileVolume) Size() int64  { return v.size }
func (v *fileVolume) Close() error { return v.f.Close() }
