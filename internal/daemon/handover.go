package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

// Planned ownership changes (docs/design.md I5). The primary opens a migration
// window for one UpToDate peer (allow-dual). The peer may then serve an NBD
// export of the volume, reads from its own replica, which holds every
// acknowledged write. Its first write asks the primary to hand over: the
// primary drains (Quiesced over the whole volume), commits the peer as the
// single primary with a new epoch and retires, so requests queued behind the
// drain fail without touching a disk. Nothing was left half-written, so the
// old primary stays an UpToDate secondary.

// errHandedOver is what writes reaching a retired primary get.
var errHandedOver = errors.New("this node handed the volume over to another primary")

// allowDual opens the migration window for target, as the primary.
func (nv *nodeVolume) allowDual(ctx context.Context, target string) (*consensus.VolumeRecord, error) {
	nv.mu.Lock()
	p, epoch := nv.primary, nv.primaryEpoch
	nv.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("node %s is not serving as primary of %s", nv.m.d.cfg.NodeName, nv.entry.Name)
	}
	rec, err := nv.vols.AllowDual(ctx, nv.entry.ShardID, epoch, target, "live migration")
	if err != nil {
		return nil, err
	}
	nv.observe(rec)
	return rec, nil
}

// endDual closes an unused migration window, as the primary.
func (nv *nodeVolume) endDual(ctx context.Context, reason string) error {
	r := nv.rec.Load()
	if r == nil || r.MigrationTarget == "" {
		return nil
	}
	nv.mu.Lock()
	p, epoch := nv.primary, nv.primaryEpoch
	nv.mu.Unlock()
	if p == nil || r.Primary != nv.m.d.cfg.NodeName {
		return nil // handed over or deposed: the window is closed already
	}
	rec, err := nv.vols.EndDual(ctx, nv.entry.ShardID, epoch, reason)
	if err != nil {
		return err
	}
	nv.observe(rec)
	return nil
}

// handover makes target the single primary (I5 steps 4-5). It is
// idempotent: called by the migration on the source and by the target's
// first write, whichever comes first wins and the other sees it done.
func (nv *nodeVolume) handover(ctx context.Context, target string) (*consensus.VolumeRecord, error) {
	nv.handoverMu.Lock()
	defer nv.handoverMu.Unlock()
	self := nv.m.d.cfg.NodeName
	r, err := nv.vols.Record(ctx, nv.entry.ShardID)
	if err != nil {
		return nil, fmt.Errorf("read the record of %s: %w", nv.entry.Name, err)
	}
	nv.observe(r)
	if r.Primary == target {
		return r, nil
	}
	if r.Primary != self {
		return nil, fmt.Errorf("%w: %s is primary of %s, not %s", consensus.ErrNotPrimary, r.Primary, nv.entry.Name, self)
	}
	if r.MigrationTarget != target {
		if r, err = nv.allowDual(ctx, target); err != nil {
			return nil, err
		}
	}
	nv.mu.Lock()
	p, epoch := nv.primary, nv.primaryEpoch
	nv.mu.Unlock()
	if p == nil || epoch != r.Epoch {
		return nil, fmt.Errorf("node %s is not serving as primary of %s at epoch %d yet", self, nv.entry.Name, r.Epoch)
	}
	var rec *consensus.VolumeRecord
	err = p.Quiesced(ctx, 0, p.Size(), func() error {
		var err error
		rec, err = nv.vols.Handover(ctx, nv.entry.ShardID, epoch, target, "live migration to "+target)
		if err != nil {
			// A retried proposal that committed the first time fails its
			// epoch guard: the record tells.
			cur, rerr := nv.vols.Record(ctx, nv.entry.ShardID)
			if rerr != nil || cur.Primary != target || cur.Epoch != epoch+1 {
				return err
			}
			rec = cur
		}
		p.Retire(errHandedOver)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hand %s over to %s: %w", nv.entry.Name, target, err)
	}
	nv.observe(rec)
	nv.m.log.Info("volume handed over", "volume", nv.entry.Name, "to", target, "epoch", rec.Epoch)
	return rec, nil
}

// takeover runs on the migration target at its first write: it asks the
// primary to hand over and waits until this node serves as primary.
func (nv *nodeVolume) takeover(ctx context.Context) (*replication.Primary, error) {
	self := nv.m.d.cfg.NodeName
	if p := nv.servingPrimary(); p != nil {
		return p, nil
	}
	nv.takeoverMu.Lock()
	defer nv.takeoverMu.Unlock()
	if p := nv.servingPrimary(); p != nil {
		return p, nil
	}
	r := nv.rec.Load()
	if r == nil || (r.Primary != self && r.MigrationTarget != self) {
		return nil, fmt.Errorf("%w: node %s may not write to %s", blockstore.ErrReadOnly, self, nv.entry.Name)
	}
	if r.Primary != self {
		ms, err := nv.m.d.metaLocal()
		if err != nil {
			return nil, err
		}
		n, ok := ms.Nodes[r.Primary]
		if !ok {
			return nil, fmt.Errorf("primary %s of %s is not a cluster member", r.Primary, nv.entry.Name)
		}
		c, err := nv.m.d.peerClient(n.BackendAddr)
		if err != nil {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = c.VolumeHandover(hctx, &tandemv1.PromoteVolumeRequest{Name: nv.entry.Name, Node: self})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %s did not hand %s over: %s", blockstore.ErrFrozen, r.Primary, nv.entry.Name, grpcMessage(err))
		}
		if rec, err := nv.vols.Record(ctx, nv.entry.ShardID); err == nil {
			nv.observe(rec)
		}
	}
	for {
		if p := nv.servingPrimary(); p != nil {
			return p, nil
		}
		nv.reconcile()
		if p := nv.servingPrimary(); p != nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting to serve %s as primary: %w", nv.entry.Name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// servingPrimary is the replication primary if this node serves as the
// primary of the record's current epoch.
func (nv *nodeVolume) servingPrimary() *replication.Primary {
	r := nv.rec.Load()
	nv.mu.Lock()
	defer nv.mu.Unlock()
	if nv.primary != nil && r != nil && r.Primary == nv.m.d.cfg.NodeName && nv.primaryEpoch == r.Epoch {
		return nv.primary
	}
	return nil
}

// migrationVolume is the migration target's export: reads come from the
// local replica; the first write takes the volume over.
type migrationVolume struct{ nv *nodeVolume }

func (v migrationVolume) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	if p := v.nv.servingPrimary(); p != nil {
		return p.ReadAt(ctx, b, off)
	}
	return v.nv.store.ReadAt(ctx, b, off)
}

func (v migrationVolume) WriteAt(ctx context.Context, b []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	p, err := v.nv.takeover(ctx)
	if err != nil {
		return 0, err
	}
	return p.WriteAt(ctx, b, off, flags)
}

// Flush before the takeover has nothing of this client's to flush.
func (v migrationVolume) Flush(ctx context.Context) error {
	if p := v.nv.servingPrimary(); p != nil {
		return p.Flush(ctx)
	}
	return nil
}

func (v migrationVolume) Trim(ctx context.Context, off, length int64) error {
	p, err := v.nv.takeover(ctx)
	if err != nil {
		return err
	}
	return p.Trim(ctx, off, length)
}

func (v migrationVolume) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	p, err := v.nv.takeover(ctx)
	if err != nil {
		return err
	}
	return p.WriteZeroes(ctx, off, length, flags)
}

func (v migrationVolume) Size() int64  { return v.nv.store.Size() }
func (v migrationVolume) Close() error { return nil }

// VolumeHandover runs on the primary (see handover).
func (s *peerService) VolumeHandover(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	nv := vm.get(req.Name)
	if nv == nil || nv.witness {
		return nil, status.Errorf(codes.NotFound, "node %s holds no replica of %q", s.d.cfg.NodeName, req.Name)
	}
	if _, err := nv.handover(ctx, req.Node); err != nil {
		return nil, volumeOpError(err)
	}
	return vm.info(req.Name)
}

// volumeOpError maps volume-shard refusals to API codes.
func volumeOpError(err error) error {
	switch {
	case errors.Is(err, consensus.ErrNotUpToDate), errors.Is(err, consensus.ErrBadTransition), errors.Is(err, consensus.ErrNotPrimary), errors.Is(err, consensus.ErrStaleEpoch):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, consensus.ErrNoQuorum):
		return status.Errorf(codes.Unavailable, "no quorum in the volume's shard: nothing was changed (%v)", err)
	}
	return metaError(err)
}
