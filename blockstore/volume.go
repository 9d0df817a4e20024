package blockstore

import (
	"context"
	"errors"
)

// WriteFlags modify a write.
type WriteFlags uint32

const (
	// FUA (force unit access): the write is durable when it returns, as if
	// followed by a Flush covering only it.
	FUA WriteFlags = 1 << iota
	// NoHole asks WriteZeroes to allocate the zeroed range rather than
	// punch a hole.
	NoHole
	// More says the caller has further requests ready to submit at once
	// (NBD: another request is already buffered). A volume that sends over
	// a network may hold this request's transmission to batch it with
	// them; it never changes what is written or when it is durable.
	More
)

// Volume is a fixed-size block device. Offsets and lengths are in bytes and
// need not be aligned; implementations align internally. Writes are durable
// only after Flush, or when written with FUA. Implementations are safe for
// concurrent use; the order of two overlapping writes that are in flight at
// the same time is the order in which their calls began.
type Volume interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64, flags WriteFlags) (int, error)
	// Flush makes every write that completed before Flush was called durable.
	Flush(ctx context.Context) error
	// Trim discards a range; later reads return zeroes.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes writes zeroes over a range, as efficiently as it can.
	WriteZeroes(ctx context.Context, off, length int64, flags WriteFlags) error
	// Size is the volume's usable size in bytes.
	Size() int64
	Close() error
}

// Typed errors every Volume implementation uses (wrapped), so that the NBD
// export and replication can map them to protocol errors.
var (
	// ErrOutOfRange: the request reaches past the end of the volume.
	ErrOutOfRange = errors.New("request out of range")
	// ErrReadOnly: the volume (or this replica) does not accept writes.
	ErrReadOnly = errors.New("volume is read-only")
	// ErrClosed: the volume was closed.
	ErrClosed = errors.New("volume is closed")
	// ErrFrozen: I/O is suspended (no quorum, or waiting for a fencing
	// decision); the request was not applied.
	ErrFrozen = errors.New("volume I/O is frozen")
	// ErrCorruptMetadata: on-disk metadata failed its checksum or is
	// inconsistent; the volume refuses to open rather than guess.
	ErrCorruptMetadata = errors.New("volume metadata is corrupt")
)

// CheckRange validates a request against a volume size.
func CheckRange(size, off, length int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return ErrOutOfRange
	}
	return nil
}
