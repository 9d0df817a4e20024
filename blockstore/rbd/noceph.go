//go:build !ceph

package rbd

import (
	"context"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// This file is the build without Ceph (no "ceph" tag): the same API, but
// Connect and Open fail with ErrNotBuilt after checking their arguments,
// so no Pool or Volume ever exists and the methods below are unreachable.

// Built reports whether this binary has Ceph support (the "ceph" tag).
const Built = false

// DefaultFeatures are Ceph's default image features (layering,
// exclusive-lock, object-map, fast-diff, deep-flatten), as librbd's
// RBD_FEATURE_* bits.
const DefaultFeatures uint64 = 1 | 4 | 8 | 16 | 32

// Pool: see the Ceph build.
type Pool struct{}

// Connect fails with ErrNotBuilt (or ErrInvalid for a bad cfg).
func Connect(ctx context.Context, cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrNotBuilt
}

// TakeoverAll fails with ErrNotBuilt.
func (v *Volume) TakeoverAll(ctx context.Context, expiry time.Duration, record func([]string) error) ([]string, error) {
	return nil, ErrNotBuilt
}

// Close does nothing.
func (p *Pool) Close() error { return nil }

// Create fails with ErrNotBuilt.
func (p *Pool) Create(ctx context.Context, name string, size int64) error { return ErrNotBuilt }

// Remove fails with ErrNotBuilt.
func (p *Pool) Remove(ctx context.Context, name string) error { return ErrNotBuilt }

// List fails with ErrNotBuilt.
func (p *Pool) List(ctx context.Context) ([]string, error) { return nil, ErrNotBuilt }

// Resize fails with ErrNotBuilt.
func (p *Pool) Resize(ctx context.Context, name string, size int64) error { return ErrNotBuilt }

// Stat fails with ErrNotBuilt.
func (p *Pool) Stat(ctx context.Context, name string) (Info, error) { return Info{}, ErrNotBuilt }

// Available fails with ErrNotBuilt.
func (p *Pool) Available(ctx context.Context) (int64, error) { return 0, ErrNotBuilt }

// BlocklistAdd fails with ErrNotBuilt.
func (p *Pool) BlocklistAdd(ctx context.Context, addr string, expiry time.Duration) error {
	return ErrNotBuilt
}

// BlocklistRemove fails with ErrNotBuilt.
func (p *Pool) BlocklistRemove(ctx context.Context, addr string) error { return ErrNotBuilt }

// Blocklist fails with ErrNotBuilt.
func (p *Pool) Blocklist(ctx context.Context) ([]string, error) { return nil, ErrNotBuilt }

// Volume: see the Ceph build.
type Volume struct{}

var _ blockstore.Volume = (*Volume)(nil)

// Open fails with ErrNotBuilt (or ErrInvalid for bad arguments).
func Open(ctx context.Context, cfg Config, name string, o OpenOptions) (*Volume, error) {
	if err := ImageName(name); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrNotBuilt
}

// Name is empty.
func (v *Volume) Name() string { return "" }

// ClientAddr is empty.
func (v *Volume) ClientAddr() string { return "" }

// ClientID is 0.
func (v *Volume) ClientID() uint64 { return 0 }

// Size is 0.
func (v *Volume) Size() int64 { return 0 }

// ReadAt fails with ErrNotBuilt.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return 0, ErrNotBuilt
}

// WriteAt fails with ErrNotBuilt.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	return 0, ErrNotBuilt
}

// Flush fails with ErrNotBuilt.
func (v *Volume) Flush(ctx context.Context) error { return ErrNotBuilt }

// Trim fails with ErrNotBuilt.
func (v *Volume) Trim(ctx context.Context, off, length int64) error { return ErrNotBuilt }

// WriteZeroes fails with ErrNotBuilt.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	return ErrNotBuilt
}

// Resize fails with ErrNotBuilt.
func (v *Volume) Resize(ctx context.Context, size int64) error { return ErrNotBuilt }

// Info fails with ErrNotBuilt.
func (v *Volume) Info(ctx context.Context) (Info, error) { return Info{}, ErrNotBuilt }

// Acquire fails with ErrNotBuilt.
func (v *Volume) Acquire(ctx context.Context) error { return ErrNotBuilt }

// Release fails with ErrNotBuilt.
func (v *Volume) Release(ctx context.Context) error { return ErrNotBuilt }

// IsLockOwner fails with ErrNotBuilt.
func (v *Volume) IsLockOwner(ctx context.Context) (bool, error) { return false, ErrNotBuilt }

// Takeover fails with ErrNotBuilt.
func (v *Volume) Takeover(ctx context.Context, expiry time.Duration, record func([]string) error) ([]string, error) {
	return nil, ErrNotBuilt
}

// Close does nothing.
func (v *Volume) Close() error { return nil }
