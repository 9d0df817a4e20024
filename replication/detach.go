package replication

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// The primary's own disk, DRBD's on-io-error detach. When the local disk
// fails a request (a write, flush, trim or read returns an I/O error), the
// primary detaches it instead of failing the guest's I/O for as long as it
// runs: the local replica is committed Failed in the volume's shard (I3:
// it can never lead again with what it holds), and from then on requests
// go to the in-sync peers only. A write is acknowledged once every in-sync
// replica (now only peers) has it; with no in-sync peer it fails with EIO,
// never acknowledged without a copy on a replica the record names
// UpToDate. Reads are served by an in-sync peer (FrameRead). Reattach
// brings the disk back by copying every block from a peer.

type localState int

const (
	localAttached localState = iota
	// localDetaching: a fault was seen and the Failed commit is under way;
	// acknowledgements are frozen meanwhile.
	localDetaching
	localDetached
	// localAttaching: Reattach copies the peer's data in; new writes reach
	// the local disk too, but no result depends on it yet.
	localAttaching
)

func (s localState) String() string {
	return [...]string{"UpToDate", "Detaching", "Diskless", "Attaching"}[s]
}

// Errors of the detached (diskless) mode.
var (
	// ErrNoUpToDatePeer wraps a Fencer's refusal to detach the local disk
	// because the record names no other UpToDate replica.
	ErrNoUpToDatePeer = errors.New("no other replica is UpToDate")
	// ErrDiskless: the local disk is detached and no in-sync peer can
	// serve the request. It wraps EIO: the guest sees an I/O error.
	ErrDiskless = fmt.Errorf("local disk detached and no in-sync peer holds the data: %w", syscall.EIO)
	// ErrNotDetached refuses Reattach on an attached disk.
	ErrNotDetached = errors.New("the local disk is not detached")
)

// isDiskFault reports whether a local store error is the disk's own fault
// (EIO, ENOSPC, a failed sync), as opposed to the request or the store's
// life cycle.
func isDiskFault(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, blockstore.ErrOutOfRange),
		errors.Is(err, blockstore.ErrClosed),
		errors.Is(err, blockstore.ErrFrozen),
		errors.Is(err, blockstore.ErrReadOnly),
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// LocalStatus is the local disk's state, for status output.
type LocalStatus struct {
	// State is UpToDate, Detaching, Diskless or Attaching.
	State string
	// Cause is the I/O error that detached it.
	Cause string
}

// Describe is the one-line form status output shows.
func (s LocalStatus) Describe() string {
	if s.Cause == "" {
		return s.State
	}
	return fmt.Sprintf("%s (detached after I/O error: %s)", s.State, s.Cause)
}

// StoppedDiskless reports whether this primary stopped because its local
// disk is detached and its last in-sync peer failed: it acknowledges
// nothing more, though the record still names that peer UpToDate. The
// caller starts a fresh primary, which serves through the peer again once
// it is back (the primary itself never reconnects an in-sync peer it lost
// while diskless: that peer's data is the volume's, not something to
// resync from here).
//
// It stays false while a fence of another peer is still committing: a
// fresh primary reads the record, which must name that peer Outdated
// first, or it would link it in sync though it misses writes the lost
// peer has (the writes in flight when both failed).
func (p *Primary) StoppedDiskless() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deposed == nil || !errors.Is(p.deposed, ErrDiskless) {
		return false
	}
	for _, pe := range p.peers {
		if pe.state == peerFencing {
			return false
		}
	}
	return true
}

// Local reports the local disk's state.
func (p *Primary) Local() LocalStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := LocalStatus{State: p.local.String()}
	if p.localErr != nil {
		s.Cause = p.localErr.Error()
	}
	return s
}

// inSyncLocked counts the peers in sync; p.mu held.
func (p *Primary) inSyncLocked() int {
	n := 0
	for _, pe := range p.peers {
		if pe.state == peerInSync {
			n++
		}
	}
	return n
}

// noteFault records a local disk fault while p.local is attached. It runs
// before the failed request releases its range, so that nothing ordered
// after it (a resync chunk) reads the local disk as if it held the data.
// It returns whether the caller must commit the detach; with no in-sync
// peer the disk stays attached and the request fails as before.
func (p *Primary) noteFault(cause error) (commit bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.local == localAttaching:
		// The copy-in failed on the disk: detached again, as the record
		// (SyncTarget) already says it holds nothing to rely on.
		p.local, p.localErr = localDetached, cause
		p.log.Error("local disk failed again while re-attaching; staying diskless", "err", cause)
		return false
	case p.local != localAttached:
		return false
	case p.inSyncLocked() == 0 || p.closed:
		return false
	}
	p.local, p.localErr = localDetaching, cause
	p.detachDone = make(chan struct{})
	if !p.frozen {
		p.frozen = true
		p.thaw = make(chan struct{})
	}
	p.log.Error("local disk I/O error; detaching it and serving through the in-sync peers", "err", cause)
	p.wg.Add(1) // commitDetach's; under p.mu with p.closed false, as Close waits
	return true
}

// commitDetach commits the local replica Failed (the shard refuses it when
// no other replica is UpToDate) and thaws. Without quorum it retries, and
// nothing is acknowledged meanwhile (as for a fence, I2). Peers syncing
// from the local disk are fenced: their data would come from a disk that
// no longer gets the writes.
func (p *Primary) commitDetach(cause error) {
	defer p.wg.Done()
	var syncing []*peer
	p.mu.Lock()
	for _, pe := range p.peers {
		if pe.state == peerSyncing {
			syncing = append(syncing, pe)
		}
	}
	p.mu.Unlock()
	for _, pe := range syncing {
		pe.mu.Lock()
		gen := pe.gen
		pe.mu.Unlock()
		p.fail(pe, gen, errors.New("the primary's disk was detached during the resync"))
	}
	backoff := 50 * time.Millisecond
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = p.cfg.Fencer.Detach(ctx, p.cfg.Epoch, "detached after I/O error: "+cause.Error())
		cancel()
		if err == nil || errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) || errors.Is(err, ErrNoUpToDatePeer) {
			break
		}
		p.log.Warn("cannot commit the local disk Failed yet; I/O stays frozen", "err", err)
		select {
		case <-p.stopping:
			err = blockstore.ErrClosed
		case <-time.After(backoff):
			backoff = min(backoff*2, time.Second)
			continue
		}
		break
	}
	if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
		p.depose(err)
	}
	p.mu.Lock()
	if err == nil {
		p.local = localDetached
		p.log.Error("local disk detached (Failed); serving diskless through the in-sync peers; "+
			"run 'tandem volume resync' once the disk works again", "cause", cause)
	} else {
		// Not detached: the request that failed locally fails, as before.
		p.local, p.localErr = localAttached, nil
		p.log.Error("cannot detach the local disk; its I/O errors reach the guest", "err", err, "cause", cause)
	}
	close(p.detachDone)
	p.maybeThawLocked()
	p.mu.Unlock()
}

// waitDetach waits for a detach under way and reports whether the local
// disk is now out of the picture (detached or being re-attached).
func (p *Primary) waitDetach() bool {
	p.mu.Lock()
	for p.local == localDetaching {
		ch := p.detachDone
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.stopping:
			return false
		}
		p.mu.Lock()
	}
	st := p.local
	p.mu.Unlock()
	return st == localDetached || st == localAttaching
}

// localFault handles a local disk error of a request registered while the
// disk was attached: true when the request's outcome now rests on the
// peers alone.
func (p *Primary) localFault(cause error) bool {
	if !isDiskFault(cause) {
		return false
	}
	if p.noteFault(cause) {
		go p.commitDetach(cause)
	}
	return p.waitDetach()
}

// maybeThawLocked ends a freeze once no fence and no detach is under way;
// p.mu held.
func (p *Primary) maybeThawLocked() {
	if !p.frozen || p.local == localDetaching {
		return
	}
	for _, o := range p.peers {
		if o.state == peerFencing {
			return
		}
	}
	p.frozen = false
	close(p.thaw)
}

// maxPeerRead bounds one FrameRead.
const maxPeerRead = 1 << 20

// readPeer serves a read from an in-sync peer that offered reads. A read
// the peer did not answer (it failed, and was fenced off or stopped this
// primary) is asked again of another in-sync peer, once per peer: with a
// second copy in sync, losing one is no reason for the guest to see EIO.
func (p *Primary) readPeer(ctx context.Context, b []byte, off int64) (int, error) {
	for done := 0; done < len(b); {
		n := min(len(b)-done, maxPeerRead)
		var err error
		for range len(p.peers) {
			err = p.readPeerOnce(ctx, b[done:done+n], off+int64(done))
			if err == nil || errors.Is(err, ErrDiskless) || ctx.Err() != nil || p.usable() != nil {
				break
			}
			p.log.Warn("read from a peer failed; asking another in-sync peer", "err", err)
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return len(b), nil
}

func (p *Primary) readPeerOnce(ctx context.Context, b []byte, off int64) error {
	r := &req{kind: FrameRead, off: off, len: int64(len(b)), started: time.Now(), allDone: make(chan struct{}), waiting: 1}
	r.refs.Store(1)
	p.mu.Lock()
	var pe *peer
	for _, o := range p.peers {
		if o.state != peerInSync {
			continue
		}
		o.mu.Lock()
		ok := o.reads && o.wake != nil
		o.mu.Unlock()
		if ok {
			pe = o
			break
		}
	}
	if pe == nil {
		p.mu.Unlock()
		return fmt.Errorf("read %d+%d: %w", off, len(b), ErrDiskless)
	}
	if err := p.takeSeqLocked(r); err != nil {
		p.mu.Unlock()
		return err
	}
	r.frame = AppendFrame(make([]byte, 0, headerSize), Header{Type: FrameRead, Seq: r.seq, Epoch: p.cfg.Epoch, Offset: uint64(off), Length: uint32(len(b))}, nil)
	p.enqueue(pe, r, false)
	p.mu.Unlock()
	p.send(pe, true)
	select {
	case <-r.allDone:
	case <-ctx.Done():
		return fmt.Errorf("read from peer %s: %w", pe.cfg.Name, ctx.Err())
	case <-p.stopping:
		return blockstore.ErrClosed
	}
	r.mu.Lock()
	err, data := r.err, r.data
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("read %d+%d from peer %s: %w: %w", off, len(b), pe.cfg.Name, syscall.EIO, err)
	}
	if len(data) != len(b) {
		return fmt.Errorf("read %d+%d from peer %s: got %d bytes (peer lost): %w", off, len(b), pe.cfg.Name, len(data), syscall.EIO)
	}
	copy(b, data)
	return nil
}

// Reattach brings a detached local disk back (DRBD's attach after
// detach): it commits the local replica SyncTarget, copies every block
// from an in-sync peer, ordered with the guests' writes (which reach the
// local disk too from the start), flushes, commits it UpToDate and serves
// from it again. Peers that are not in sync get a full resync afterwards,
// as nothing recorded what they missed while the primary was diskless. A
// disk that fails again leaves it detached.
func (p *Primary) Reattach(ctx context.Context) error {
	done, err := p.StartReattach(ctx)
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("re-attach goes on: %w", ctx.Err())
	}
}

// StartReattach is Reattach with the copy left running: it returns once
// the local replica is committed SyncTarget, and done gets the outcome.
// The copy stops with the primary, not with ctx.
func (p *Primary) StartReattach(ctx context.Context) (done <-chan error, err error) {
	p.mu.Lock()
	if err := p.usableLocked(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	if p.local != localDetached {
		st := p.local
		p.mu.Unlock()
		return nil, fmt.Errorf("%w (it is %s)", ErrNotDetached, st)
	}
	var src *peer
	for _, o := range p.peers {
		o.mu.Lock()
		ok := o.reads && o.wake != nil
		o.mu.Unlock()
		if o.state == peerInSync && ok {
			src = o
			break
		}
	}
	p.mu.Unlock()
	if src == nil {
		return nil, fmt.Errorf("re-attach: %w", ErrDiskless)
	}
	if err := p.cfg.Fencer.SetState(ctx, p.cfg.Epoch, p.cfg.Node, SyncTarget, "re-attaching the local disk"); err != nil {
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
			p.depose(err)
		}
		return nil, fmt.Errorf("commit SyncTarget for the local disk: %w", err)
	}
	p.mu.Lock()
	if p.local != localDetached || p.closed {
		st := p.local
		p.mu.Unlock()
		return nil, fmt.Errorf("re-attach: the local disk became %s meanwhile", st)
	}
	p.local = localAttaching
	p.wg.Add(1)
	p.mu.Unlock()
	ch := make(chan error, 1)
	go func() {
		defer p.wg.Done()
		cctx, cancel := p.stopContext()
		defer cancel()
		ch <- p.copyAllIn(cctx, src)
	}()
	return ch, nil
}

// copyAllIn is the copy of Reattach.
func (p *Primary) copyAllIn(ctx context.Context, src *peer) error {
	p.log.Info("re-attaching the local disk: copying every block from a peer", "peer", src.cfg.Name)
	if r, ok := p.cfg.Local.(interface{ ResetSyncError() }); ok {
		// Every block is written again below, then flushed: a sync that
		// failed before the detach no longer speaks for the disk.
		r.ResetSyncError()
	}
	start := time.Now()
	fail := func(err error) error {
		p.mu.Lock()
		if p.local == localAttaching {
			p.local = localDetached
		}
		p.mu.Unlock()
		p.log.Error("re-attach failed; the local disk stays detached", "err", err)
		return err
	}
	size := p.Size()
	for off := int64(0); off < size; off += p.cfg.ResyncChunk {
		n := min(p.cfg.ResyncChunk, size-off)
		if err := p.copyIn(ctx, src, off, n); err != nil {
			return fail(fmt.Errorf("re-attach %d+%d: %w", off, n, err))
		}
		if err := p.pace(ctx, n, time.Now()); err != nil {
			return fail(err)
		}
	}
	if err := p.cfg.Local.Flush(ctx); err != nil {
		p.noteFault(err)
		return fail(fmt.Errorf("re-attach: flush the local disk: %w", err))
	}
	// Write-ahead for the peers out of sync: nothing recorded what they
	// missed while the disk was detached. No resync runs meanwhile (the
	// reconnect loop waits for an attached disk), so nothing clears these.
	p.mu.Lock()
	var out []*peer
	for _, o := range p.peers {
		if o.state != peerInSync {
			out = append(out, o)
		}
	}
	p.mu.Unlock()
	for _, o := range out {
		if err := p.cfg.Local.MarkDirty(ctx, o.cfg.Slot, 0, size); err != nil {
			p.noteFault(err)
			return fail(fmt.Errorf("re-attach: mark peer %s for a full resync: %w", o.cfg.Name, err))
		}
	}
	if err := p.cfg.Fencer.SetState(ctx, p.cfg.Epoch, p.cfg.Node, UpToDate, "local disk re-attached"); err != nil {
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrNotPrimary) {
			p.depose(err)
		}
		return fail(fmt.Errorf("commit the local disk UpToDate: %w", err))
	}
	p.mu.Lock()
	ok := p.local == localAttaching
	if ok {
		p.local, p.localErr = localAttached, nil
	}
	p.mu.Unlock()
	if !ok {
		// It failed between the commit and here; the next request's
		// fault detaches it again through the shard.
		return fmt.Errorf("re-attach: the local disk failed at the end: %w", syscall.EIO)
	}
	p.log.Info("local disk re-attached; UpToDate", "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// copyIn copies one range from a peer to the local disk, ordered with the
// guests' requests: earlier overlapping writes are in the peer's stream
// before the read, later ones reach the local disk after the copy.
func (p *Primary) copyIn(ctx context.Context, src *peer, off, length int64) error {
	r := &req{kind: FrameRead, off: off, len: length, started: time.Now(), allDone: make(chan struct{}), waiting: 1}
	r.refs.Store(1)
	p.mu.Lock()
	if err := p.takeSeqLocked(r); err != nil {
		p.mu.Unlock()
		return err
	}
	if src.state != peerInSync || p.local != localAttaching {
		p.mu.Unlock()
		return fmt.Errorf("peer %s is %s, local disk %s", src.cfg.Name, src.state, p.local)
	}
	r.frame = AppendFrame(make([]byte, 0, headerSize), Header{Type: FrameRead, Seq: r.seq, Epoch: p.cfg.Epoch, Offset: uint64(off), Length: uint32(length)}, nil)
	lk := p.order.Enqueue(off, off+length, 0, r)
	p.enqueue(src, r, false)
	p.mu.Unlock()
	p.send(src, true)
	// Held until the local write is done, whatever ctx says: later
	// overlapping writes must reach the local disk after the copy.
	_ = p.order.Wait(context.Background(), lk)
	defer p.order.Release(lk)
	select {
	case <-r.allDone:
	case <-p.stopping:
		return blockstore.ErrClosed
	}
	r.mu.Lock()
	err, data := r.err, r.data
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("read from peer %s: %w", src.cfg.Name, err)
	}
	if int64(len(data)) != length {
		return fmt.Errorf("read from peer %s: got %d bytes (peer lost)", src.cfg.Name, len(data))
	}
	if _, err := p.cfg.Local.WriteAt(context.WithoutCancel(ctx), data, off, 0); err != nil {
		p.noteFault(err)
		return fmt.Errorf("local write: %w", err)
	}
	return nil
}
