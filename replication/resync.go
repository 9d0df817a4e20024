package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// resync brings an Outdated peer back: connect, commit SyncTarget, copy the
// regions in its dirty bitmap while new writes keep flowing to it, flush,
// commit UpToDate. Only the dirty set crosses the network (I4).
func (p *Primary) resync(pe *peer) error {
	ctx, cancel := p.stopContext()
	defer cancel()
	ack, err := p.connectAck(ctx, pe)
	if err != nil {
		return err
	}
	// What the peer may have written as a primary without acknowledgement
	// must be overwritten too; so must a peer still to be reconciled
	// after a change of primary (PeerConfig.Reconcile) everywhere.
	full := pe.reconcile.Load()
	if ack.ActivityFull || full {
		if err := p.cfg.Local.MarkDirty(ctx, pe.cfg.Slot, 0, p.Size()); err != nil {
			return fmt.Errorf("mark peer activity: %w", err)
		}
	}
	for _, r := range ack.Activity {
		off, n := max(r[0], 0), r[1]
		if n <= 0 || off >= p.Size() {
			continue
		}
		if err := p.cfg.Local.MarkDirty(ctx, pe.cfg.Slot, off, min(n, p.Size()-off)); err != nil {
			return fmt.Errorf("mark peer activity: %w", err)
		}
	}
	pe.mu.Lock()
	gen := pe.gen
	pe.mu.Unlock()
	abandon := func(err error) error {
		pe.mu.Lock()
		if pe.gen == gen && pe.conn != nil {
			pe.conn.Close()
		}
		pe.mu.Unlock()
		return err
	}
	if err := p.cfg.Fencer.SetState(ctx, p.cfg.Epoch, pe.cfg.Name, SyncTarget, "resync starting"); err != nil {
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
			p.depose(err)
		}
		return abandon(fmt.Errorf("commit SyncTarget: %w", err))
	}
	// From here every new write goes to the peer too and waits for it.
	p.mu.Lock()
	pe.state = peerSyncing
	p.mu.Unlock()
	dirty := p.cfg.Local.DirtyBytes(pe.cfg.Slot)
	p.log.Info("resync started", "peer", pe.cfg.Name, "dirty_bytes", dirty)
	start := time.Now()

	var chunks [][2]int64
	p.cfg.Local.DirtyRanges(pe.cfg.Slot, func(off, length int64) bool {
		for length > 0 {
			n := min(length, p.cfg.ResyncChunk)
			chunks = append(chunks, [2]int64{off, n})
			off += n
			length -= n
		}
		return true
	})
	// A failure from here on fences the peer (if nothing else did yet), so
	// that it is Outdated again, never left syncing with no resync running.
	stop := func(err error) error {
		p.fail(pe, gen, err)
		return err
	}
	var sent int64
	chunkStart := time.Now()
	for _, c := range chunks {
		if err := p.resyncOne(ctx, pe, gen, FrameResync, c[0], c[1]); err != nil {
			return stop(fmt.Errorf("resync %d+%d: %w", c[0], c[1], err))
		}
		if err := p.cfg.Local.ClearDirty(ctx, pe.cfg.Slot, c[0], c[1]); err != nil {
			return stop(fmt.Errorf("clear dirty bits: %w", err))
		}
		sent += c[1]
		pe.resyncSent.Add(c[1])
		if err := p.pace(ctx, c[1], chunkStart); err != nil {
			return stop(err)
		}
		chunkStart = time.Now()
	}
	if err := p.resyncOne(ctx, pe, gen, FrameFlush, 0, 0); err != nil {
		return stop(fmt.Errorf("resync flush: %w", err))
	}
	if left := p.cfg.Local.DirtyBytes(pe.cfg.Slot); left != 0 {
		return stop(fmt.Errorf("%d dirty bytes left after resync", left))
	}
	if full {
		// Every block was copied: it holds nothing of the old primary's
		// that this one lacks.
		pe.reconcile.Store(false)
	}
	if err := p.cfg.Fencer.SetState(ctx, p.cfg.Epoch, pe.cfg.Name, UpToDate, "resync done"); err != nil {
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
			p.depose(err)
		}
		return stop(fmt.Errorf("commit UpToDate: %w", err))
	}
	p.mu.Lock()
	if pe.state == peerSyncing {
		pe.state = peerInSync
	}
	p.mu.Unlock()
	p.log.Info("resync done; peer UpToDate", "peer", pe.cfg.Name, "bytes", sent, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// resyncOne sends one chunk (or a flush) to a single peer, ordered with the
// guests' writes: it takes its queue position and range before reading.
func (p *Primary) resyncOne(ctx context.Context, pe *peer, gen uint64, kind FrameType, off, length int64) error {
	r := &req{kind: kind, off: off, len: length, started: time.Now(), allDone: make(chan struct{}), ready: make(chan struct{}), waiting: 1}
	p.mu.Lock()
	if err := p.usableLocked(); err != nil {
		p.mu.Unlock()
		return err
	}
	if pe.state != peerSyncing && pe.state != peerInSync {
		p.mu.Unlock()
		return fmt.Errorf("peer %s is %s", pe.cfg.Name, pe.state)
	}
	if p.local != localAttached {
		p.mu.Unlock()
		return fmt.Errorf("the local disk is %s: nothing to resync from", p.local)
	}
	r.seq = p.nextSeq
	p.nextSeq++
	lk := p.order.Enqueue(off, off+length, orderMode(kind), r)
	p.enqueue(pe, r, true)
	p.mu.Unlock()

	// Not given up on ctx: the chunk holds its place in the peer's queue
	// until its frame is filled in.
	_ = p.order.Wait(context.Background(), lk)
	var err error
	if kind == FrameResync {
		buf := make([]byte, length)
		if _, err = p.cfg.Local.ReadAt(ctx, buf, off); err == nil {
			// An earlier request's local fault is recorded before it
			// released this range: never send what the disk may lack.
			p.mu.Lock()
			if p.local != localAttached {
				err = fmt.Errorf("the local disk is %s", p.local)
			}
			p.mu.Unlock()
		}
		if err == nil {
			r.frame = AppendFrame(make([]byte, 0, headerSize+len(buf)), Header{Type: FrameResync, Epoch: p.cfg.Epoch, Offset: uint64(off)}, buf)
		}
	} else {
		r.frame = AppendFrame(nil, Header{Type: FrameFlush, Epoch: p.cfg.Epoch}, nil)
	}
	if err != nil {
		// Keep the stream well-formed: send a harmless ping in its place.
		r.frame = AppendFrame(nil, Header{Type: FramePing, Epoch: p.cfg.Epoch}, nil)
	}
	binary.BigEndian.PutUint64(r.frame[8:], r.seq)
	close(r.ready)
	p.order.Release(lk)
	if err != nil {
		return fmt.Errorf("read local: %w", err)
	}
	select {
	case <-r.allDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	rerr := r.err
	r.mu.Unlock()
	if rerr != nil {
		return rerr
	}
	// A fence resolves pending requests too (after marking them dirty):
	// only a peer still syncing on the same connection really confirmed it.
	p.mu.Lock()
	state := pe.state
	p.mu.Unlock()
	pe.mu.Lock()
	same := pe.gen == gen
	pe.mu.Unlock()
	if (state != peerSyncing && state != peerInSync) || !same {
		return fmt.Errorf("peer %s failed during resync", pe.cfg.Name)
	}
	return nil
}

// Reconciled records that peerName was reconciled after a change of
// primary (an online verify with repair found and overwrote what it held
// differently): from now on its resyncs copy only its dirty set again.
func (p *Primary) Reconciled(peerName string) {
	for _, pe := range p.peers {
		if pe.cfg.Name == peerName {
			pe.reconcile.Store(false)
		}
	}
}

// SetResyncRate changes the resync limit (bytes per second, 0 unlimited),
// also for a resync in progress: a pause under way is recomputed at once.
func (p *Primary) SetResyncRate(bytesPerSecond int64) {
	bytesPerSecond = max(bytesPerSecond, 0)
	p.rateMu.Lock()
	defer p.rateMu.Unlock()
	if bytesPerSecond != p.rate {
		p.rate = bytesPerSecond
		close(p.rateCh)
		p.rateCh = make(chan struct{})
	}
}

// SetPlainStream changes whether connections opened from now on ask their
// peer for a plain data stream (Config.PlainStream); open ones keep theirs.
func (p *Primary) SetPlainStream(plain bool) { p.plain.Store(plain) }

func (p *Primary) resyncRate() (int64, <-chan struct{}) {
	p.rateMu.Lock()
	defer p.rateMu.Unlock()
	return p.rate, p.rateCh
}

// pace holds the resync after a chunk of n bytes sent since start until the
// current rate allows the next one. Writes from guests come first.
func (p *Primary) pace(ctx context.Context, n int64, start time.Time) error {
	for {
		rate, changed := p.resyncRate()
		if rate <= 0 {
			return nil
		}
		d := time.Duration(float64(n)/float64(rate)*float64(time.Second)) - time.Since(start)
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-changed: // recompute with the new rate
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// Repair resends a range from the local replica to a connected peer,
// ordered with the guests' writes (online verify found it different).
func (p *Primary) Repair(ctx context.Context, peerName string, off, length int64) error {
	var pe *peer
	p.mu.Lock()
	for _, o := range p.peers {
		if o.cfg.Name == peerName {
			pe = o
		}
	}
	p.mu.Unlock()
	if pe == nil {
		return fmt.Errorf("%s is not a peer of volume %s", peerName, p.cfg.Volume)
	}
	pe.mu.Lock()
	gen := pe.gen
	pe.mu.Unlock()
	for length > 0 {
		n := min(length, p.cfg.ResyncChunk)
		if err := p.resyncOne(ctx, pe, gen, FrameResync, off, n); err != nil {
			return err
		}
		pe.resyncSent.Add(n)
		off += n
		length -= n
	}
	return p.resyncOne(ctx, pe, gen, FrameFlush, 0, 0)
}

// Quiesced runs fn while no request overlapping [off, off+length) is in
// flight: earlier overlapping requests have completed everywhere (local and
// every peer that acknowledged them) and later ones wait before they are
// sent anywhere. Online verify uses it to compare a block across replicas
// without a write racing the check.
func (p *Primary) Quiesced(ctx context.Context, off, length int64, fn func() error) error {
	r := &req{kind: FrameResync, off: off, len: length, started: time.Now(), localDone: make(chan struct{}), allDone: make(chan struct{}), finished: true}
	close(r.allDone)
	p.mu.Lock()
	if err := p.takeSeqLocked(r); err != nil {
		p.mu.Unlock()
		return err
	}
	deps := p.order.Conflicting(off, off+length, 0)
	lk := p.order.Enqueue(off, off+length, 0, r)
	p.quiesced = append(p.quiesced, r)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for i, a := range p.quiesced {
			if a == r {
				p.quiesced = append(p.quiesced[:i], p.quiesced[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		close(r.localDone)
	}()
	// Granted once the earlier overlapping requests are done locally; the
	// place is given up at once (later overlapping requests wait on
	// quiesced, before they are sent), so a resync chunk queued behind it
	// is not held for fn.
	if err := p.order.Wait(ctx, lk); err != nil {
		return err
	}
	p.order.Release(lk)
	for _, d := range deps {
		select {
		case <-d.allDone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fn()
}

// DiscardPeer throws away a peer's data: it is fenced off (Outdated), every
// region is marked for it, and it is resynced in full when it connects. An
// operator uses it to resolve a diverged or unrelated replica in favour of
// this primary.
func (p *Primary) DiscardPeer(ctx context.Context, peerName string) error {
	var pe *peer
	p.mu.Lock()
	for _, o := range p.peers {
		if o.cfg.Name == peerName {
			pe = o
		}
	}
	if pe == nil {
		p.mu.Unlock()
		return fmt.Errorf("%s is not a peer of volume %s", peerName, p.cfg.Volume)
	}
	state := pe.state
	p.mu.Unlock()
	pe.mu.Lock()
	gen := pe.gen
	pe.mu.Unlock()
	switch state {
	case peerInSync, peerSyncing:
		p.fail(pe, gen, errors.New("operator discarded its data"))
	case peerDiverged:
		if err := p.cfg.Fencer.Outdate(ctx, p.cfg.Epoch, pe.cfg.Name, "operator discarded its data"); err != nil {
			return fmt.Errorf("commit Outdated: %w", err)
		}
	}
	// Wait for the fence (if one runs) before marking everything.
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		st := pe.state
		p.mu.Unlock()
		if st == peerOutdated || st == peerDiverged {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("peer %s is still %s", peerName, st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := p.cfg.Local.MarkDirty(ctx, pe.cfg.Slot, 0, p.Size()); err != nil {
		return fmt.Errorf("mark all for a full resync: %w", err)
	}
	p.mu.Lock()
	restart := pe.state == peerDiverged
	if restart {
		pe.state = peerOutdated
	}
	p.mu.Unlock()
	if restart {
		p.startReconnect(pe)
	}
	p.log.Warn("peer's data discarded; full resync when it connects", "peer", peerName)
	return nil
}
