package volume

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
		return nil, fmt.Errorf("node %s is not serving as primary of %s", nv.m.self(), nv.entry.Name)
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
	if p == nil || r.Primary != nv.m.self() {
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
	self := nv.m.self()
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
	self := nv.m.self()
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
		ms, err := nv.m.metaLocal()
		if err != nil {
			return nil, err
		}
		n, ok := ms.Nodes[r.Primary]
		if !ok {
			return nil, fmt.Errorf("primary %s of %s is not a cluster member", r.Primary, nv.entry.Name)
		}
		c, err := nv.m.st.Peer(n.BackendAddr)
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
	if nv.primary != nil && r != nil && r.Primary == nv.m.self() && nv.primaryEpoch == r.Epoch {
		return nv.primary
	}
	return nil
}

// migrationVolume is the migration target's export: reads come from the
// local replica; the first write takes the volume over. A remote (TCP/TLS)
// client's export is read-only and its writes never take over.
type migrationVolume struct {
	nv     *nodeVolume
	remote bool
}

// takeover is nv.takeover for a local client; a remote one is refused.
func (v migrationVolume) takeover(ctx context.Context) (*replication.Primary, error) {
	if v.remote {
		return nil, fmt.Errorf("%w: during a migration window only this node's own QEMU (the unix socket) may write to %s", blockstore.ErrReadOnly, v.nv.entry.Name)
	}
	return v.nv.takeover(ctx)
}

func (v migrationVolume) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	if p := v.nv.servingPrimary(); p != nil {
		return p.ReadAt(ctx, b, off)
	}
	if err := v.nv.windowReadable(); err != nil {
		return 0, err
	}
	return v.nv.store.ReadAt(ctx, b, off)
}

// windowReadable tells whether the window's reads may come from this
// replica: only while the record says it holds every acknowledged write.
// A target that turned Outdated during the migration (its tandemd was
// killed, the primary went on without it) misses writes; after the
// switchover its guest read them stale, and could write what it derived
// from them once a resync let the handover through (found by the fault
// schedule of seed 2073).
func (nv *nodeVolume) windowReadable() error {
	self := nv.m.self()
	r := nv.rec.Load()
	if r == nil || (r.MigrationTarget != self && r.Primary != self) {
		return fmt.Errorf("%w: node %s may not read %s: the migration window is closed", blockstore.ErrFrozen, self, nv.entry.Name)
	}
	if rr := r.Replicas[self]; rr == nil || (rr.State != consensus.UpToDate && rr.State != consensus.SyncSource) {
		state := "not a replica"
		if rr != nil {
			state = string(rr.State)
		}
		return fmt.Errorf("%w: the replica of %s on %s is %s; it may miss acknowledged writes", blockstore.ErrFrozen, nv.entry.Name, self, state)
	}
	return nil
}

func (v migrationVolume) WriteAt(ctx context.Context, b []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	p, err := v.takeover(ctx)
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
	p, err := v.takeover(ctx)
	if err != nil {
		return err
	}
	return p.Trim(ctx, off, length)
}

func (v migrationVolume) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	p, err := v.takeover(ctx)
	if err != nil {
		return err
	}
	return p.WriteZeroes(ctx, off, length, flags)
}

func (v migrationVolume) Size() int64  { return v.nv.store.Size() }
func (v migrationVolume) Close() error { return nil }

// holder is the volume's data replica here, or the NotFound error the
// peer API gives for a volume this node holds no data of.
func (m *Manager) holder(name string) (*nodeVolume, error) {
	nv := m.get(name)
	if nv == nil || nv.witness {
		return nil, status.Errorf(codes.NotFound, "node %s holds no replica of %q", m.self(), name)
	}
	return nv, nil
}

// AllowDual opens the migration window of volume name for target, as the
// primary (I5 steps 1-2: the shard refuses a target that is not UpToDate).
func (m *Manager) AllowDual(ctx context.Context, name, target string) error {
	nv, err := m.holder(name)
	if err != nil {
		return err
	}
	_, err = nv.allowDual(ctx, target)
	return err
}

// EndDual closes an unused migration window of volume name, as the primary.
func (m *Manager) EndDual(ctx context.Context, name, reason string) error {
	nv, err := m.holder(name)
	if err != nil {
		return err
	}
	return nv.endDual(ctx, reason)
}

// Handover makes target the single primary of volume name (see handover);
// it runs on the primary, for the migration and for the target's first
// write (the peer call VolumeHandover).
func (m *Manager) Handover(ctx context.Context, name, target string) error {
	nv, err := m.holder(name)
	if err != nil {
		return err
	}
	_, err = nv.handover(ctx, target)
	return err
}

// Takeover makes this node, the target of volume name's open migration
// window, its single primary (see takeover): for a migrated VM whose QEMU
// paused when the source could not hand over.
func (m *Manager) Takeover(ctx context.Context, name string) error {
	nv, err := m.holder(name)
	if err != nil {
		return err
	}
	_, err = nv.takeover(ctx)
	return err
}

// ServingPrimary reports whether this node serves volume name as the
// primary of its record's current epoch.
func (m *Manager) ServingPrimary(name string) bool {
	nv := m.get(name)
	return nv != nil && nv.servingPrimary() != nil
}

// WaitPrimary waits until this node serves volume name as primary, or ctx
// ends: a VM runs only where its volumes' primary is.
func (m *Manager) WaitPrimary(ctx context.Context, name string) error {
	nv := m.get(name)
	if nv == nil || nv.witness {
		return status.Errorf(codes.FailedPrecondition, "node %s holds no replica of volume %s", m.self(), name)
	}
	for nv.servingPrimary() == nil {
		nv.reconcile()
		if nv.servingPrimary() != nil {
			break
		}
		select {
		case <-ctx.Done():
			r := nv.rec.Load()
			if r != nil {
				return status.Errorf(codes.FailedPrecondition, "node %s is not the primary of %s (%s is, epoch %d); a VM runs only where its volumes' primary is", m.self(), name, r.Primary, r.Epoch)
			}
			return status.Errorf(codes.FailedPrecondition, "volume %s is not ready on %s", name, m.self())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Holds reports whether this node holds a data replica (not a witness)
// of volume name.
func (m *Manager) Holds(name string) bool {
	nv := m.get(name)
	return nv != nil && !nv.witness
}

// Reconcile applies volume name's record now, without waiting for the
// next change (a VM about to start here wants its primary at once).
func (m *Manager) Reconcile(name string) {
	if nv := m.get(name); nv != nil {
		nv.reconcile()
	}
}

// Record is volume name's record as last seen here, nil before any.
func (m *Manager) Record(name string) *consensus.VolumeRecord {
	if nv := m.get(name); nv != nil {
		return nv.rec.Load()
	}
	return nil
}
