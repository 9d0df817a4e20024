package replication

import (
	"context"
	"fmt"
)

// Growing a replicated volume. The volume manager grows every replica's
// store (blockstore.LocalVolume.Grow) itself, secondaries first and the
// primary last, and commits the new size only when every in-sync replica
// has grown; the primary's Size follows its store, so no write past the old
// end is sent before every in-sync secondary can take it. A replica that
// was down meanwhile grows here, at its next session: the primary's hello
// carries its size, and the secondary grows to it once the hello's epoch
// and sender are confirmed (accept). A secondary larger than its primary
// (the primary has not grown yet, or crashed before it did) is accepted:
// the primary writes only below its own size, and the bytes past it are
// zeroes on every replica that has them.

// Grower is a store that can grow its data area (blockstore.LocalVolume).
type Grower interface {
	Grow(ctx context.Context, size int64) error
}

// growTo grows t's store to size when it is smaller.
func growTo(ctx context.Context, t *Target, size int64) *refusal {
	if size <= t.Store.Size() {
		return nil
	}
	g, ok := t.Store.(Grower)
	if !ok {
		return &refusal{StatusDiverged, fmt.Sprintf("size %d differs from this replica's %d", size, t.Store.Size())}
	}
	if err := g.Grow(ctx, size); err != nil {
		return &refusal{StatusIO, fmt.Sprintf("grow this replica from %d to %d bytes: %v", t.Store.Size(), size, err)}
	}
	return nil
}
