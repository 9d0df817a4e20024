package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// fail fences a peer off: freeze new acknowledgements, commit "peer
// Outdated" through the shard, mark what the peer missed, thaw. Without
// quorum the commit keeps failing and I/O stays frozen (never acknowledged).
// It reports whether it acted: not for an old connection (gen), a peer not
// linked, or a closed primary.
func (p *Primary) fail(pe *peer, gen uint64, cause error) bool {
	p.mu.Lock()
	pe.mu.Lock()
	if pe.gen != gen || (pe.state != peerInSync && pe.state != peerSyncing) || p.closed {
		pe.mu.Unlock()
		p.mu.Unlock()
		return false
	}
	prev := pe.state
	if prev == peerInSync && p.local != localAttached && p.inSyncLocked() == 1 {
		// Diskless, the last in-sync peer holds acknowledged writes that
		// nothing else here has: it is not outdated. This primary stops
		// instead (every request fails with EIO); the record still names
		// that peer UpToDate, so a fresh primary serves through it once
		// it is back, or HA or an operator promotes it.
		//
		// With another peer still in sync, the failed one is fenced off
		// as usual below: the others hold every acknowledged write, and
		// stopping would leave the record naming UpToDate a replica that
		// misses the writes in flight, which the next primary would then
		// link in sync beside one that has them (the fault-schedule
		// runner, seed 7025: replicas differing after healing). Detached,
		// the disk keeps no bitmap of what it misses; the re-attach
		// resyncs every peer not in sync in full.
		err := fmt.Errorf("in-sync peer %s failed while the local disk is detached (%v): %w", pe.cfg.Name, cause, ErrDiskless)
		if p.deposed == nil {
			p.deposed = err
		}
		pe.state = peerOutdated
		if pe.conn != nil {
			pe.conn.Close()
		}
		p.releaseAll(pe.queue)
		pe.queue, pe.wake = nil, nil
		pe.mu.Unlock()
		if p.frozen {
			p.frozen = false
			close(p.thaw)
		}
		p.mu.Unlock()
		p.log.Error("in-sync peer lost while diskless; no replica left to serve from: stopping", "peer", pe.cfg.Name, "err", cause)
		p.failPending(pe, err)
		return true
	}
	pe.state = peerFencing
	if pe.conn != nil {
		pe.conn.Close()
	}
	p.releaseAll(pe.queue)
	pe.queue, pe.wake = nil, nil
	pe.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thaw = make(chan struct{})
	}
	p.mu.Unlock()
	p.log.Warn("peer failed; freezing acknowledgements and fencing it off", "peer", pe.cfg.Name, "was", prev, "err", cause)

	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.fence(pe, cause)
	}()
	return true
}

func (p *Primary) fence(pe *peer, cause error) {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.cfg.Fencer.Outdate(ctx, p.cfg.Epoch, pe.cfg.Name, cause.Error())
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
			p.depose(err)
			p.failPending(pe, p.deposedErr())
			return
		}
		p.log.Warn("cannot commit peer Outdated yet; I/O stays frozen", "peer", pe.cfg.Name, "err", err)
		select {
		case <-p.stopping:
			p.failPending(pe, blockstore.ErrClosed)
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	// Committed: what the peer did not confirm is now its dirty set.
	pe.mu.Lock()
	pending := pe.pending
	pe.pending = map[uint64]*req{}
	pe.mu.Unlock()
	p.mu.Lock()
	attached := p.local == localAttached
	p.mu.Unlock()
	for _, r := range pending {
		var err error
		switch {
		case r.kind == FrameRead:
			err = fmt.Errorf("peer %s fenced off before it answered", pe.cfg.Name)
		case r.kind != FrameFlush && r.len > 0 && attached:
			// (Not attached, the disk keeps no bitmap: a full resync
			// follows a re-attach.)
			err = p.cfg.Local.MarkDirty(context.Background(), pe.cfg.Slot, r.off, r.len)
		}
		r.resolve(err)
	}
	p.mu.Lock()
	pe.state = peerOutdated
	p.maybeThawLocked()
	p.mu.Unlock()
	p.log.Warn("peer fenced off (Outdated); continuing without it", "peer", pe.cfg.Name, "dirty_bytes", p.cfg.Local.DirtyBytes(pe.cfg.Slot))
	p.startReconnect(pe)
}

func (p *Primary) failPending(pe *peer, err error) {
	pe.mu.Lock()
	pending := pe.pending
	pe.pending = map[uint64]*req{}
	pe.mu.Unlock()
	for _, r := range pending {
		r.resolve(err)
	}
}

// RecordReader returns the epoch and the replica states of the volume's
// record, from a read that began after the call (a linearizable read).
type RecordReader func(ctx context.Context) (epoch uint64, states map[string]ReplicaState, err error)

// Realign fences off again every peer this primary links in sync while the
// record at its epoch names it neither UpToDate nor SyncSource. They
// disagree when a fence proposed by an earlier incarnation of this primary
// (same node, same epoch, before a restart) commits after this one linked
// the peer: the record then says Outdated, the link says in sync, and
// neither side would ever resync it (the fault-schedule runner's finding 2,
// seed 1014). Fencing again makes them agree the usual way: "peer
// Outdated" is committed (it already is), what the peer has not confirmed
// is marked, and the resync brings it back to UpToDate. It reports the
// peers it fenced.
//
// The links are sampled before the record is read, and a peer is fenced
// only if its connection is still the sampled one and still in sync: every
// transition this primary commits (SyncTarget, UpToDate) is committed before
// the link becomes in sync, so a read that began later sees it, and a late
// commit is the only way the two can disagree.
func (p *Primary) Realign(ctx context.Context, read RecordReader) ([]string, error) {
	type linked struct {
		pe  *peer
		gen uint64
	}
	var in []linked
	p.mu.Lock()
	if p.local != localAttached {
		// Diskless, an in-sync peer is the only copy this primary serves
		// from: fencing it would stop the volume. Its record is left to
		// the operator and to the next primary.
		p.mu.Unlock()
		return nil, nil
	}
	for _, pe := range p.peers {
		if pe.state == peerInSync {
			pe.mu.Lock()
			in = append(in, linked{pe, pe.gen})
			pe.mu.Unlock()
		}
	}
	p.mu.Unlock()
	if len(in) == 0 {
		return nil, nil
	}
	epoch, states, err := read(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the volume record: %w", err)
	}
	if epoch != p.cfg.Epoch {
		return nil, nil // another primary's epoch: this one is deposed at its next commit
	}
	var fenced []string
	for _, l := range in {
		s, ok := states[l.pe.cfg.Name]
		if !ok || s == UpToDate || s == SyncSource {
			continue
		}
		cause := fmt.Errorf("the volume record names it %s at epoch %d while this primary links it in sync (a fence committed after the link, e.g. one proposed before a restart)", s, epoch)
		if p.fail(l.pe, l.gen, cause) {
			fenced = append(fenced, l.pe.cfg.Name)
		}
	}
	return fenced, nil
}
