package replication

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/rangelock"
)

// req is one request fanned out to the local store and the connected peers.
type req struct {
	seq      uint64
	kind     FrameType
	off, len int64
	frame    []byte
	// refs counts the frame's holders: the submitter and each peer queue
	// or send batch it is in. The last one recycles a pooled frame.
	refs    atomic.Int32
	pooled  bool
	started time.Time
	// localDone, for a Quiesced range only, is closed when it ends.
	localDone chan struct{}
	// ready, when set, is closed once frame is filled in: a resync chunk
	// takes its place in the peer's queue before its data is read.
	ready chan struct{}
	// strong are the targets in sync when the request was registered, and
	// strongAcks counts their acknowledgements; strongSkipped counts the
	// in-sync peers a flush skipped as already durable. With the local
	// disk out of the picture, a request succeeds only if one of them has
	// it (detach.go).
	strong        []*peer
	strongAcks    atomic.Int32
	strongSkipped int
	// data is a FrameRead's answer.
	data []byte

	mu       sync.Mutex
	waiting  int
	err      error
	allDone  chan struct{}
	finished bool
}

// ackedBy counts pe's acknowledgement if pe was in sync at registration.
func (r *req) ackedBy(pe *peer) {
	for _, s := range r.strong {
		if s == pe {
			r.strongAcks.Add(1)
			return
		}
	}
}

// resolve records one peer's part of the request.
func (r *req) resolve(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	if err != nil && r.err == nil {
		r.err = err
	}
	r.waiting--
	if r.waiting <= 0 {
		r.finished = true
		close(r.allDone)
	}
}

// release drops one holder of r's frame; the last one recycles it.
func (p *Primary) release(r *req) {
	if r.refs.Add(-1) == 0 && r.pooled {
		p.frames.Put(r.frame)
	}
}

func (p *Primary) releaseAll(rs []*req) {
	for _, r := range rs {
		p.release(r)
	}
}

// submit runs one request: dirty marking for fenced peers, ordered
// registration, fan-out, local I/O, then waiting for every connected peer.
// With more, the caller has further requests coming at once: the frame is
// left to the sender goroutine, which then writes them all in one batch.
func (p *Primary) submit(ctx context.Context, kind FrameType, off, length int64, flags uint16, more bool, payload []byte, local func(context.Context) error) error {
	// Encode outside the lock; the sequence number is patched in below.
	var frame []byte
	switch {
	case len(p.peers) == 0:
		// A single-replica volume sends nothing anywhere.
	case kind == FrameWrite:
		frame = AppendFrame(p.frames.Get(headerSize + len(payload))[:0], Header{Type: kind, Flags: flags, Epoch: p.cfg.Epoch, Offset: uint64(off)}, payload)
	default:
		frame = AppendFrame(make([]byte, 0, headerSize), Header{Type: kind, Flags: flags, Epoch: p.cfg.Epoch, Offset: uint64(off), Length: uint32(length)}, nil)
	}
	r := &req{kind: kind, off: off, len: length, frame: frame, pooled: kind == FrameWrite && frame != nil, started: time.Now(), allDone: make(chan struct{})}
	r.refs.Store(1)
	defer p.release(r)
	if err := ctx.Err(); err != nil {
		return err // a caller that already gave up sends nothing anywhere
	}
	p.mu.Lock()
	useAL := p.local == localAttached
	p.mu.Unlock()
	if p.al != nil && kind != FrameFlush && useAL {
		// Write-ahead: the region is in the activity log before any disk
		// can see the request. (A diskless primary keeps none: its disk
		// gets nothing, and a crash promotes a peer, whose replicas are
		// reconciled.)
		if err := p.al.begin(ctx, off, length); err != nil {
			if !isDiskFault(err) || !p.localFault(err) {
				return fmt.Errorf("activity log: %w", err)
			}
		} else {
			defer p.al.end(off, length)
		}
	}

	p.mu.Lock()
	var marked uint64 // bitmap slots already marked for this request
	for {
		for p.frozen && p.deposed == nil && !p.closed {
			thaw := p.thaw
			p.mu.Unlock()
			select {
			case <-thaw:
			case <-ctx.Done():
				return fmt.Errorf("waiting for replication to thaw: %w", ctx.Err())
			}
			p.mu.Lock()
		}
		for q := p.quiescedLocked(r); q != nil; q = p.quiescedLocked(r) {
			p.mu.Unlock()
			select {
			case <-q.localDone:
			case <-ctx.Done():
				return fmt.Errorf("waiting for a verify of the range: %w", ctx.Err())
			}
			p.mu.Lock()
		}
		need := p.fencedSlotsLocked() &^ marked
		if kind == FrameFlush || need == 0 || p.local != localAttached {
			// Not attached: the disk keeps no bitmap; peers out of sync
			// get a full resync after a re-attach (Reattach).
			break
		}
		// Write-ahead for peers that will miss this write (I2, I4): their
		// dirty bits are durable before any disk sees it, so a crash right
		// after the local write still leaves it in their resync. Done
		// unlocked; the set is checked again, as a peer may have been
		// fenced meanwhile.
		p.mu.Unlock()
		for slot := range 64 {
			if need&(1<<slot) == 0 {
				continue
			}
			if err := p.cfg.Local.MarkDirty(ctx, slot, off, length); err != nil {
				if !isDiskFault(err) || !p.localFault(err) {
					return fmt.Errorf("mark dirty for a fenced peer: %w", err)
				}
				break // detached: the loop above re-checks (and stops marking)
			}
		}
		marked |= need
		p.mu.Lock()
	}
	if err := p.takeSeqLocked(r); err != nil {
		p.mu.Unlock()
		return err
	}
	if r.frame != nil {
		binary.BigEndian.PutUint64(r.frame[8:], r.seq)
	}
	lk := p.order.Enqueue(r.off, r.off+r.len, orderMode(kind), r)
	mode := p.local
	var targets []*peer
	for _, pe := range p.peers {
		switch pe.state {
		case peerInSync, peerSyncing:
			if kind == FrameFlush && pe.durable() {
				if pe.state == peerInSync {
					r.strongSkipped++
				}
				continue // it reported every write it has durable
			}
			if pe.state == peerInSync {
				r.strong = append(r.strong, pe)
			}
			targets = append(targets, pe)
		}
	}
	r.waiting = len(targets)
	if r.waiting == 0 {
		r.finished = true
		close(r.allDone)
	}
	for _, pe := range targets {
		p.enqueue(pe, r, more)
	}
	p.mu.Unlock()
	if !more {
		for _, pe := range targets {
			p.send(pe, true)
		}
	}

	// Overlapping earlier requests reach the local disk first. The wait
	// cannot be given up: the request is already on its way to the peers.
	_ = p.order.Wait(context.Background(), lk)
	// Nor can the local I/O: a caller that gave up must not leave the
	// peers with a write the local disk never got (they would differ with
	// no dirty bit to say so).
	// Registered diskless, the local disk gets nothing; while it is
	// being re-attached it gets every write, but no result depends on it.
	var lerr error
	peersOnly := mode != localAttached
	if mode == localAttached || mode == localAttaching {
		lerr = local(context.WithoutCancel(ctx))
		if lerr != nil && isDiskFault(lerr) && mode == localAttached {
			// Recorded before the range is released: a resync chunk
			// ordered after this request must not read the local disk.
			if p.noteFault(lerr) {
				go p.commitDetach(lerr)
			}
		}
		if mode == localAttaching {
			if lerr != nil {
				p.noteFault(lerr) // back to detached
			}
			lerr = nil
		}
	}
	p.order.Release(lk)
	if lerr != nil && isDiskFault(lerr) && p.waitDetach() {
		lerr, peersOnly = nil, true // detached: the peers decide
	}
	select {
	case <-r.allDone:
	case <-ctx.Done():
		return fmt.Errorf("waiting for replicas: %w", ctx.Err())
	case <-p.stopping:
		return blockstore.ErrClosed
	}
	if lerr != nil {
		return fmt.Errorf("local %s: %w", kind, lerr)
	}
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err == nil && peersOnly && int(r.strongAcks.Load())+r.strongSkipped == 0 {
		// No replica the record names UpToDate has it: never acknowledged.
		return fmt.Errorf("%s %d+%d: %w", kind, off, length, ErrDiskless)
	}
	return err
}

// fencedSlotsLocked are the bitmap slots of the peers a request registered
// now would not reach (every state but in sync, syncing and fencing; a
// fencing peer freezes new requests), one bit per slot.
func (p *Primary) fencedSlotsLocked() uint64 {
	var slots uint64
	for _, pe := range p.peers {
		switch pe.state {
		case peerInSync, peerSyncing, peerFencing:
		default:
			slots |= 1 << pe.cfg.Slot
		}
	}
	return slots
}

func (p *Primary) quiescedLocked(r *req) *req {
	for _, q := range p.quiesced {
		if r.kind == FrameFlush || (q.off < r.off+r.len && r.off < q.off+q.len) {
			return q
		}
	}
	return nil
}

// orderMode is how a request orders against others besides by its range:
// a flush orders after everything in flight, and everything after a flush.
func orderMode(kind FrameType) rangelock.Mode {
	if kind == FrameFlush {
		return rangelock.Barrier
	}
	return 0
}
