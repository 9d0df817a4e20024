package replication

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

type peerState int

const (
	peerInSync peerState = iota
	peerSyncing
	peerFencing
	peerOutdated
	peerDiverged
)

func (s peerState) String() string {
	return [...]string{"in-sync", "syncing", "fencing", "outdated", "diverged"}[s]
}

type peer struct {
	cfg   PeerConfig
	state peerState // guarded by Primary.mu

	mu      sync.Mutex // guards conn, w, writing, pending, queue, wake
	conn    net.Conn
	w       *bufio.Writer // conn's, used by whoever holds writing
	cork    corker        // conn's, or nil
	writing bool          // someone is writing queued frames (send)
	// lastMod is the sequence of the last modifying frame queued on this
	// connection (noMod before the first); synced is the highest sequence
	// the peer reported durable (FrameSynced). A flush skips the peer
	// while synced >= lastMod: nothing it acknowledged can be lost.
	lastMod, synced uint64
	pending         map[uint64]*req
	// queue is unbounded so that enqueueing under Primary.mu never blocks
	// on a stalled peer; its length is bounded by the requests in flight.
	queue []*req
	wake  chan struct{}
	// busy tells the connection's watchdog that a request is pending
	// again after none was: an idle peer's watchdog sleeps (issue 17, a
	// ticker per idle peer was a wakeup a second per volume at rest).
	busy chan struct{}
	gen  uint64 // connection generation, to ignore late events of an old conn
	// reads: the peer's HelloAck offered FrameRead.
	reads bool
	// stream is the connection's data stream (PeerStatus.Stream).
	stream string

	// reconnecting is set while the peer's one reconnect loop runs
	// (guarded by Primary.mu): two loops would open two connections to
	// the peer and take turns failing each other's resync.
	reconnecting bool

	resyncSent atomic.Int64

	// reconcile: the record has the peer to be reconciled after a change
	// of primary (PeerConfig.Reconcile) and nothing has done it yet: a
	// resync of it copies everything, since no bitmap says where it may
	// hold what the old primary never got acknowledged.
	reconcile atomic.Bool
}

// durable reports whether the peer said every modifying frame queued to it
// is durable, so that a flush needs nothing from it.
func (pe *peer) durable() bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return pe.lastMod != noMod && pe.synced >= pe.lastMod
}

// noMod marks a connection on which no modifying frame was queued yet: the
// peer may hold unflushed writes from before, so flushes go to it.
const noMod = math.MaxUint64

// enqueue queues r for a peer; called with p.mu held so that every peer
// sees requests in sequence order. With wake the sender goroutine writes
// it; otherwise the caller calls send after releasing p.mu.
func (p *Primary) enqueue(pe *peer, r *req, wake bool) {
	pe.mu.Lock()
	if len(pe.pending) == 0 {
		select {
		case pe.busy <- struct{}{}:
		default:
		}
	}
	pe.pending[r.seq] = r
	if r.kind != FrameFlush && r.kind != FrameRead {
		pe.lastMod = r.seq
	}
	if pe.wake != nil {
		r.refs.Add(1)
		pe.queue = append(pe.queue, r)
		if wake {
			select {
			case pe.wake <- struct{}{}:
			default:
			}
		}
	}
	pe.mu.Unlock()
}

// send writes a peer's queued frames in order. Whoever finds the stream
// idle writes, and keeps writing what others queue meanwhile; the others
// only queue. At queue depth 1 the submitting goroutine thus writes its own
// frame with no hand-off to the sender goroutine (measured: a goroutine
// wake-up across CPUs costs 20-50 µs on the 2-vCPU test VM). An inline
// caller leaves frames still waiting for resync data to the sender
// goroutine rather than block on the disk read.
func (p *Primary) send(pe *peer, inline bool) {
	pe.mu.Lock()
	if pe.writing || len(pe.queue) == 0 || pe.wake == nil {
		pe.mu.Unlock()
		return
	}
	gen, conn, w, wake, cork := pe.gen, pe.conn, pe.w, pe.wake, pe.cork
	pe.writing = true
	for {
		batch := pe.queue
		pe.queue = nil
		pe.mu.Unlock()
		var err error
		handOff := -1
		if cork != nil {
			cork.Cork()
		}
		for i, r := range batch {
			if r.ready != nil {
				if inline && !isClosed(r.ready) {
					handOff = i
					break
				}
				select {
				case <-r.ready:
				case <-p.stopping:
					p.releaseAll(batch[i:])
					if cork != nil {
						_ = cork.Uncork()
					}
					return // the Primary is closing: nothing is sent any more
				}
			}
			_ = conn.SetWriteDeadline(time.Now().Add(p.cfg.AckTimeout))
			_, err = w.Write(r.frame) // keeps no reference once it returns
			p.release(r)
			if err != nil {
				p.releaseAll(batch[i+1:])
				break
			}
		}
		if err == nil {
			err = w.Flush()
		}
		if cork != nil {
			if uerr := cork.Uncork(); err == nil {
				err = uerr
			}
		}
		pe.mu.Lock()
		if pe.gen != gen {
			pe.mu.Unlock()
			if handOff >= 0 {
				p.releaseAll(batch[handOff:])
			}
			return // failed or replaced meanwhile: the new stream starts clean
		}
		if err != nil {
			pe.writing = false
			pe.mu.Unlock()
			p.fail(pe, gen, fmt.Errorf("send: %w", err))
			return
		}
		if handOff >= 0 || (inline && len(pe.queue) > 0) {
			// An inline writer writes one batch: what queued meanwhile
			// goes to the sender goroutine, so that a submitter's own
			// local write is not held up behind other requests' frames.
			if handOff >= 0 {
				pe.queue = append(batch[handOff:len(batch):len(batch)], pe.queue...)
			}
			pe.writing = false
			select {
			case wake <- struct{}{}:
			default:
			}
			pe.mu.Unlock()
			return
		}
		if len(pe.queue) == 0 {
			pe.writing = false
			pe.mu.Unlock()
			return
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// connect dials a peer, says hello and starts its sender and receiver.
func (p *Primary) connect(ctx context.Context, pe *peer) error {
	_, err := p.connectAck(ctx, pe)
	return err
}

func (p *Primary) connectAck(ctx context.Context, pe *peer) (*HelloAck, error) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
	defer cancel()
	conn, err := p.cfg.Dial(dctx, pe.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", pe.cfg.Addr, err)
	}
	// A plain stream is asked for only where there is a TLS session to
	// leave (the daemon's Dialer returns a *tls.Conn).
	tc, _ := conn.(*tls.Conn)
	askPlain := tc != nil && p.plain.Load()
	ack, err := p.hello(dctx, conn, askPlain)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ack.Status != StatusOK {
		conn.Close()
		return nil, &RefusedError{Peer: pe.cfg.Name, Status: ack.Status, Msg: ack.Message}
	}
	if ack.Plain {
		// The peer has left TLS: from here on conn is the TCP connection
		// (with its cork), and the tls.Conn is never used again, not even
		// closed, which would send it a close_notify in the clear.
		if !askPlain {
			closeUnder(conn)
			return nil, fmt.Errorf("%w: hello-ack agrees to a plain stream nobody asked for", ErrBadFrame)
		}
		raw, err := leaveTLS(tc)
		if err != nil {
			tc.NetConn().Close()
			return nil, err
		}
		conn = raw
	}
	stream := streamOf(conn, ack.Plain)
	p.log.Info("replication connection open", "peer", pe.cfg.Name, "addr", pe.cfg.Addr, "data_stream", stream, "asked_plain", askPlain)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Close()
		return nil, blockstore.ErrClosed
	}
	pe.mu.Lock()
	if pe.conn != nil {
		// Never two connections to one peer: the old one's receiver would
		// outlive it (and Close would wait for it forever).
		pe.conn.Close()
	}
	pe.gen++
	gen := pe.gen
	pe.conn = conn
	pe.w = bufio.NewWriterSize(conn, 256<<10)
	pe.cork = corkerOf(conn)
	pe.writing = false
	pe.lastMod, pe.synced = noMod, 0
	pe.reads = ack.Reads
	pe.stream = stream
	p.releaseAll(pe.queue)
	pe.queue = nil
	pe.wake = make(chan struct{}, 1)
	wake := pe.wake
	pe.mu.Unlock()
	p.wg.Add(2)
	p.mu.Unlock()
	go p.sender(pe, wake, gen)
	go p.receiver(pe, conn, gen)
	return ack, nil
}

// hello sends the Hello and reads the HelloAck, and nothing else: until
// the HelloAck is read, the peer may not have left TLS yet, and after it
// the secondary sends nothing until this side's first frame (leaveTLS).
func (p *Primary) hello(ctx context.Context, conn net.Conn, plain bool) (*HelloAck, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	b, err := json.Marshal(Hello{Volume: p.cfg.Volume, From: p.cfg.Node, Epoch: p.cfg.Epoch, Size: p.Size(), VolumeID: p.cfg.VolumeID, Synced: true, Plain: plain})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(AppendFrame(nil, Header{Type: FrameHello, Epoch: p.cfg.Epoch}, b)); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	var hdr [headerSize]byte
	h, payload, err := ReadFrame(conn, hdr[:], nil) // unbuffered: nothing past the HelloAck is read
	if err != nil {
		return nil, fmt.Errorf("hello reply: %w", err)
	}
	if h.Type != FrameHelloAck {
		return nil, fmt.Errorf("%w: expected hello-ack, got %s", ErrBadFrame, h.Type)
	}
	var ack HelloAck
	if err := json.Unmarshal(payload, &ack); err != nil {
		return nil, fmt.Errorf("%w: hello-ack: %v", ErrBadFrame, err)
	}
	return &ack, nil
}

// sender writes what the submitters left to it: frames queued with wake
// (resync chunks) and whatever waits behind them.
func (p *Primary) sender(pe *peer, wake chan struct{}, gen uint64) {
	defer p.wg.Done()
	for {
		select {
		case <-wake:
		case <-p.stopping:
			return
		}
		pe.mu.Lock()
		stale := pe.gen != gen
		pe.mu.Unlock()
		if stale {
			return
		}
		p.send(pe, false)
	}
}

func (p *Primary) receiver(pe *peer, conn net.Conn, gen uint64) {
	defer p.wg.Done()
	r := bufio.NewReaderSize(conn, 64<<10)
	var hdr [headerSize]byte
	// A watchdog closes the connection when the oldest request waits too
	// long: a paused or wedged peer must be fenced, not waited for.
	stop := make(chan struct{})
	defer close(stop)
	go p.watchdog(pe, conn, gen, stop)
	for {
		h, payload, err := ReadFrame(r, hdr[:], nil)
		if err != nil {
			p.fail(pe, gen, fmt.Errorf("receive: %w", err))
			return
		}
		if h.Type == FrameSynced {
			pe.mu.Lock()
			if pe.gen == gen && h.Seq > pe.synced {
				pe.synced = h.Seq
			}
			pe.mu.Unlock()
			continue
		}
		if h.Type != FrameAck && h.Type != FrameReadData {
			p.fail(pe, gen, fmt.Errorf("%w: unexpected %s from secondary", ErrBadFrame, h.Type))
			return
		}
		pe.mu.Lock()
		rq, ok := pe.pending[h.Seq]
		if ok {
			delete(pe.pending, h.Seq)
		}
		pe.mu.Unlock()
		if !ok {
			continue
		}
		if h.Type == FrameReadData {
			if rq.kind != FrameRead {
				p.fail(pe, gen, fmt.Errorf("%w: read data for a %s request", ErrBadFrame, rq.kind))
				return
			}
			rq.mu.Lock()
			rq.data = payload // ReadFrame allocated it for this frame alone
			rq.mu.Unlock()
			rq.resolve(nil)
			continue
		}
		st := Status(h.Flags)
		switch st {
		case StatusOK:
			rq.ackedBy(pe)
			rq.resolve(nil)
		case StatusStaleEpoch, StatusNotPrimary:
			// I1 seen from the primary: someone else leads now.
			ref := &RefusedError{Peer: pe.cfg.Name, Status: st, Msg: string(payload)}
			p.depose(ref)
			rq.resolve(ref)
			// Nothing more will be acknowledged: release every waiter.
			p.failPending(pe, ref)
			conn.Close()
			return
		default:
			// The peer could not apply it (I/O error, frozen), or took a
			// newer connection of this same epoch (StatusSuperseded: one
			// this primary gave up on, accepted late): fence it, and the
			// reconnect loop resyncs it. Only a newer epoch deposes.
			pe.mu.Lock()
			pe.pending[h.Seq] = rq
			pe.mu.Unlock()
			p.fail(pe, gen, &RefusedError{Peer: pe.cfg.Name, Status: st, Msg: string(payload)})
			return
		}
	}
}

func (p *Primary) watchdog(pe *peer, conn net.Conn, gen uint64, stop chan struct{}) {
	t := time.NewTimer(p.cfg.AckTimeout / 4)
	defer t.Stop()
	idle := false
	for {
		if idle {
			// Nothing pending at the last check: sleep until a request
			// is queued (enqueue signals busy), then check a quarter of
			// the timeout later, as when busy. A request that waits is
			// still caught between AckTimeout and 1.25 × AckTimeout.
			select {
			case <-stop:
				return
			case <-p.stopping:
				return
			case <-pe.busy:
			}
		}
		t.Reset(p.cfg.AckTimeout / 4)
		select {
		case <-stop:
			return
		case <-p.stopping:
			return
		case <-t.C:
		}
		var oldest time.Time
		pe.mu.Lock()
		for _, r := range pe.pending {
			if oldest.IsZero() || r.started.Before(oldest) {
				oldest = r.started
			}
		}
		idle = len(pe.pending) == 0
		if idle {
			// A signal from before this check is stale: drop it, so
			// that the wait above sleeps until the next request.
			select {
			case <-pe.busy:
			default:
			}
		}
		pe.mu.Unlock()
		if !oldest.IsZero() && time.Since(oldest) > p.cfg.AckTimeout {
			p.fail(pe, gen, fmt.Errorf("no answer for %s", time.Since(oldest).Round(time.Millisecond)))
			conn.Close()
			return
		}
	}
}

// startReconnect keeps trying to bring an Outdated peer back by resync. A
// peer has at most one such loop: a fence or a discard during a resync
// leaves the running loop to retry.
func (p *Primary) startReconnect(pe *peer) {
	p.mu.Lock()
	if pe.reconnecting || p.closed {
		p.mu.Unlock()
		return
	}
	pe.reconnecting = true
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		// A peer whose disk fails its writes refuses every resync once
		// it began, and each attempt commits SyncTarget and Outdated again
		// and freezes acknowledgements meanwhile: such attempts back off
		// (up to 30 times the interval). A peer that is down costs nothing
		// like that and is tried at the interval, so that it is resynced
		// as soon as it is back.
		wait := p.cfg.ReconnectInterval
		for {
			select {
			case <-p.stopping:
				return
			case <-time.After(wait):
			}
			if p.usable() != nil {
				return
			}
			p.mu.Lock()
			if p.local != localAttached {
				// A resync reads the local disk: none while it is not
				// attached (Reattach marks these peers for a full one).
				p.mu.Unlock()
				continue
			}
			st := pe.state
			if st == peerInSync || st == peerDiverged {
				pe.reconnecting = false
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			if st != peerOutdated {
				continue // a fence is still committing
			}
			err := p.resync(pe)
			if err == nil {
				continue // in sync now: the check above ends the loop
			}
			var ref *RefusedError
			if errors.As(err, &ref) && ref.Status == StatusIO {
				wait = min(2*wait, 30*p.cfg.ReconnectInterval)
				p.log.Warn("resync refused by the peer's disk; next attempt later", "peer", pe.cfg.Name, "in", wait, "err", err)
			} else {
				wait = p.cfg.ReconnectInterval
			}
			if errors.As(err, &ref) && ref.Status == StatusDiverged {
				p.mu.Lock()
				pe.state = peerDiverged
				pe.reconnecting = false
				p.mu.Unlock()
				p.log.Error("peer holds unrelated data; not resyncing until an operator discards one side", "peer", pe.cfg.Name, "err", err)
				return
			}
			p.log.Debug("resync attempt failed", "peer", pe.cfg.Name, "err", err)
		}
	}()
}
