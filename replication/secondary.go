package replication

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/rangelock"
	"github.com/tandemhci/tandem/internal/batchwrite"
	"github.com/tandemhci/tandem/internal/workers"
)

// View is a volume's committed ownership as a node knows it.
type View struct {
	Epoch   uint64
	Primary string
}

// Authority tells a replica who may write a volume.
type Authority interface {
	// View is the last committed view this node applied; it is called on
	// every frame and must be cheap.
	View() View
	// Refresh reads the committed view through the volume's Raft shard
	// (linearizable); it fails without quorum.
	Refresh(ctx context.Context) (View, error)
}

// Target is a volume this node holds a secondary replica of.
type Target struct {
	Name      string
	Store     blockstore.Volume
	VolumeID  string
	Authority Authority
	// PersistEpoch records the highest epoch accepted in the replica's own
	// metadata, so that after a restart it refuses older epochs even before
	// it can reach the shard.
	PersistEpoch func(ctx context.Context, epoch uint64) error
	// Activity, when set, reports the replica's activity-log regions (from
	// a time it was primary) for the primary to resync.
	Activity func() (ranges [][2]int64, full bool)
	// PlainStream agrees to a primary's request for an unencrypted data
	// stream after the hello (Hello.Plain; see leaveTLS): this node's own
	// view of the setting, read when the connection looks the volume up.
	PlainStream bool
}

// Lookup finds the target for a volume name.
type Lookup func(name string) (*Target, error)

// ErrUnknownVolume is returned by a Lookup for volumes the node does not hold.
var ErrUnknownVolume = errors.New("unknown volume")

// Authorize names the node behind a completed TLS handshake, or refuses it.
// The daemon implements it with its cluster PKI; the data path only needs
// the name, which I1 then checks against the volume's committed primary.
type Authorize func(state tls.ConnectionState) (node string, err error)

// Secondary accepts replication connections from primaries and applies
// their frames to local replicas.
type Secondary struct {
	log       *slog.Logger
	lookup    Lookup
	authorize Authorize
	// refreshTimeout bounds the linearizable read at handshake.
	refreshTimeout time.Duration

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	gates map[gateKey]*sessionGate // by volume; see sessionGate
	// rewrite holds the volumes whose replica's disk lost a sync and that
	// asked their primary for a full resync (see stickySync); rewriting
	// counts them, so that the data path looks at the map only then.
	rewrite   map[string]bool
	rewriting atomic.Int32
}

// stickySync is a store whose failed sync sticks (blockstore.LocalVolume):
// writes since the last good sync may be lost, so every later flush fails.
// Such a replica asks its primary for a full resync (HelloAck.ActivityFull),
// and its sticky error is reset at the first frame of that session that
// writes or flushes (the primary sends none before): every block is then
// rewritten before the replica can be UpToDate again (the
// primary marked them all in its durable bitmap before committing
// SyncTarget), and a resync cut short leaves the rest marked. Without it a
// secondary whose disk had failed once refused every resync until tandemd
// restarted (found by the fault-schedule runner's disk faults).
type stickySync interface {
	SyncError() error
	ResetSyncError()
}

// NewSecondary returns a server that finds replicas through lookup and
// names the senders of Serve's connections with authorize. A nil authorize
// refuses every connection Serve accepts.
func NewSecondary(log *slog.Logger, lookup Lookup, authorize Authorize) *Secondary {
	return &Secondary{log: log, lookup: lookup, authorize: authorize, refreshTimeout: 2 * time.Second, conns: map[net.Conn]struct{}{}, gates: map[gateKey]*sessionGate{}, rewrite: map[string]bool{}}
}

// Serve accepts connections until ctx ends or ln fails. Connections from ln
// must be TLS, and authorize must name the sender from its handshake.
func (s *Secondary) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("replication accept: %w", err)
		}
		go func() {
			peer, err := s.tlsPeer(ctx, c)
			if err != nil {
				s.log.Warn("replication connection refused", "remote", c.RemoteAddr(), "err", err)
				c.Close()
				return
			}
			if err := s.ServeConn(ctx, c, peer); err != nil && ctx.Err() == nil {
				s.log.Info("replication connection ended", "peer", peer, "err", err)
			}
		}()
	}
}

func (s *Secondary) tlsPeer(ctx context.Context, c net.Conn) (string, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "", errors.New("not a TLS connection")
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return "", fmt.Errorf("TLS handshake: %w", err)
	}
	if s.authorize == nil {
		return "", errors.New("no peer authorization configured")
	}
	name, err := s.authorize(tc.ConnectionState())
	if err != nil {
		return "", err
	}
	return name, nil
}

// refusal is a protocol-level rejection sent back to the primary.
type refusal struct {
	status Status
	msg    string
}

func (r *refusal) Error() string { return fmt.Sprintf("%s: %s", r.status, r.msg) }

// ServeConn runs one replication connection whose sender is the node named
// from (already authenticated).
func (s *Secondary) ServeConn(ctx context.Context, c net.Conn, from string) error {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	// cur is what closes the connection: c, or once it left TLS the
	// connection under it (a close_notify would land in the plain stream).
	cur := c
	defer func() {
		s.mu.Lock()
		delete(s.conns, cur)
		s.mu.Unlock()
		cur.Close()
	}()
	r := bufio.NewReaderSize(c, 256<<10) // replaced by one over the TCP connection if it leaves TLS
	w := bufio.NewWriterSize(c, 64<<10)
	var hdr [headerSize]byte

	h, p, err := ReadFrame(r, hdr[:], nil)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if h.Type != FrameHello {
		return fmt.Errorf("%w: expected hello, got %s", ErrBadFrame, h.Type)
	}
	var hello Hello
	if err := json.Unmarshal(p, &hello); err != nil {
		return fmt.Errorf("%w: hello: %v", ErrBadFrame, err)
	}
	t, epoch, ref := s.accept(ctx, &hello, from)
	var g *sessionGate
	var sess session
	if ref == nil {
		g = s.gate(t)
		bctx, cancel := context.WithTimeout(ctx, s.drainTimeout())
		sess, err = g.begin(bctx, epoch)
		cancel()
		switch {
		case errors.Is(err, ErrStaleEpoch):
			ref = &refusal{StatusStaleEpoch, err.Error()}
		case err != nil:
			ref = &refusal{StatusFrozen, err.Error()}
		}
	}
	var raw net.Conn // the TCP connection, once both sides agreed to leave TLS
	if tc, ok := c.(*tls.Conn); ok && ref == nil && hello.Plain && t.PlainStream {
		// The primary sends nothing after its Hello until it has read the
		// HelloAck, so nothing may be buffered past the Hello here, in r
		// or in the TLS layer (leaveTLS): this is the last moment to look,
		// as the primary's plain frames may follow the HelloAck at once.
		if n := r.Buffered(); n > 0 {
			ref = &refusal{StatusBadFrame, fmt.Sprintf("%d bytes followed the hello before its answer", n)}
		} else if raw, err = leaveTLS(tc); err != nil {
			ref = &refusal{StatusBadFrame, err.Error()}
		} else {
			// Shutdown closes the TCP connection from now on, not the TLS
			// session (Serve's closer and the deferred close above).
			s.mu.Lock()
			delete(s.conns, c)
			s.conns[raw] = struct{}{}
			cur = raw
			s.mu.Unlock()
		}
	}
	ack := HelloAck{Status: StatusOK, Epoch: epoch, Reads: true, Plain: raw != nil}
	if t != nil {
		ack.VolumeID = t.VolumeID
		if ref == nil && t.Activity != nil {
			ack.Activity, ack.ActivityFull = t.Activity()
		}
		if ss, ok := t.Store.(stickySync); ok && ref == nil && ss.SyncError() != nil {
			ack.ActivityFull = true
			s.mu.Lock()
			if !s.rewrite[t.Name] {
				s.rewrite[t.Name] = true
				s.rewriting.Add(1)
			}
			s.mu.Unlock()
			s.log.Warn("this replica's disk lost a sync; asking the primary for a full resync", "volume", t.Name, "from", from, "err", ss.SyncError())
		}
	}
	if ref != nil {
		ack.Status, ack.Message = ref.status, ref.msg
	}
	b, _ := json.Marshal(ack)
	if _, err := w.Write(AppendFrame(nil, Header{Type: FrameHelloAck, Epoch: epoch}, b)); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if ref != nil {
		s.log.Warn("replication refused", "volume", hello.Volume, "from", from, "epoch", hello.Epoch, "reason", ref)
		return ref
	}
	if raw != nil {
		// The HelloAck was the last TLS record: the frames go on in the
		// clear. The old r holds nothing (checked above) and w was
		// flushed.
		r = bufio.NewReaderSize(raw, 256<<10)
		w = bufio.NewWriterSize(raw, 64<<10)
	}
	s.log.Info("replicating", "volume", t.Name, "from", from, "epoch", epoch, "data_stream", streamOf(c, raw != nil), "asked_plain", hello.Plain)
	return s.apply(ctx, t, from, epoch, hello.Synced, g, sess, r, w)
}

// gate is the session gate of a volume's replica on this node.
func (s *Secondary) gate(t *Target) *sessionGate {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := gateKey{t.Name, t.VolumeID}
	g := s.gates[k]
	if g == nil {
		g = newSessionGate()
		s.gates[k] = g
	}
	return g
}

// gateKey names a volume's gate by its name and on-disk ID: a gate
// remembers the newest epoch it let in, and a volume deleted and created
// again under the same name starts over at epoch 1.
type gateKey struct{ name, volumeID string }

// drainTimeout bounds how long a new session waits for an older one's
// writes to reach the disk (a disk that stalls longer fails the session,
// and the primary retries).
func (s *Secondary) drainTimeout() time.Duration { return 30 * time.Second }

// accept decides whether from may replicate hello.Volume at hello.Epoch.
// It always confirms with the shard: a deposed primary that reconnects after
// a partition must meet the new epoch, not this node's possibly stale view.
func (s *Secondary) accept(ctx context.Context, hello *Hello, from string) (*Target, uint64, *refusal) {
	if hello.From != from {
		return nil, 0, &refusal{StatusNotPrimary, fmt.Sprintf("hello says %q but the certificate names %q", hello.From, from)}
	}
	t, err := s.lookup(hello.Volume)
	if err != nil {
		return nil, 0, &refusal{StatusUnknownVolume, err.Error()}
	}
	if hello.Size > t.Store.Size() {
		if _, ok := t.Store.(Grower); !ok {
			return t, 0, &refusal{StatusDiverged, fmt.Sprintf("size %d differs from this replica's %d", hello.Size, t.Store.Size())}
		}
	}
	if t.VolumeID != "" && hello.VolumeID != "" && hello.VolumeID != t.VolumeID {
		return t, 0, &refusal{StatusDiverged, fmt.Sprintf("volume id %s differs from this replica's %s: unrelated data", hello.VolumeID, t.VolumeID)}
	}
	rctx, cancel := context.WithTimeout(ctx, s.refreshTimeout)
	v, err := t.Authority.Refresh(rctx)
	cancel()
	if err != nil {
		return t, 0, &refusal{StatusFrozen, fmt.Sprintf("cannot confirm the volume's epoch: %v", err)}
	}
	if r := check(v, hello.Epoch, from); r != nil {
		return t, v.Epoch, r
	}
	if r := growTo(ctx, t, hello.Size); r != nil {
		return t, v.Epoch, r
	}
	if t.PersistEpoch != nil {
		if err := t.PersistEpoch(ctx, v.Epoch); err != nil {
			return t, v.Epoch, &refusal{StatusIO, fmt.Sprintf("record epoch: %v", err)}
		}
	}
	return t, v.Epoch, nil
}

// check is I1: only the primary of the current epoch may write.
func check(v View, epoch uint64, from string) *refusal {
	if epoch != v.Epoch {
		return &refusal{StatusStaleEpoch, fmt.Sprintf("epoch %d is not the volume's current epoch %d", epoch, v.Epoch)}
	}
	if from != v.Primary {
		return &refusal{StatusNotPrimary, fmt.Sprintf("%s is not the primary of epoch %d (%s is)", from, v.Epoch, v.Primary)}
	}
	return nil
}

// maxApplyInFlight bounds the frames a secondary applies at once. The
// primary pipelines writes; applying them one by one would cap a replicated
// volume at the secondary disk's QD1 rate.
const maxApplyInFlight = 64

// syncAheader is a store that can make completed writes durable ahead of
// an expected flush (blockstore.LocalVolume).
type syncAheader interface {
	SyncAhead(ctx context.Context) bool
}

// maxLargeInFlight bounds the large frames read ahead of the disk.
const maxLargeInFlight = 4

// largeFrame is the size above which frames are applied one at a time.
const largeFrame = 128 << 10

func (s *Secondary) apply(ctx context.Context, t *Target, from string, epoch uint64, synced bool, g *sessionGate, sess session, r *bufio.Reader, w *bufio.Writer) error {
	var hdr [headerSize]byte
	var (
		// order holds the frames being applied, in stream order:
		// overlapping frames apply in order; a flush covers every frame
		// before it (and holds back none after it). Unrelated frames go to
		// the disk in parallel.
		order rangelock.Lock[struct{}]
		// large orders the large frames among themselves: they reach the
		// disk one at a time, in order, as the disk streams them best
		// (measured: parallel 1 MiB writes lost sequential throughput);
		// the next one is read and decrypted while the previous one is
		// written.
		large rangelock.Lock[struct{}]
		wg    sync.WaitGroup
	)
	// Acks from parallel applies share the stream through a batching
	// writer: one TLS record and syscall carries every ack that became
	// ready while the previous one was being written.
	bw := batchwrite.New(flushWriter{w})
	// ack sends one acknowledgement; with flush false it is only queued
	// (the reader knows more requests are already buffered, and the next
	// ack flushes them all).
	ack := func(seq uint64, status Status, msg string, flush bool) error {
		var fb [headerSize + 64]byte
		return bw.Write(flush, AppendFrame(fb[:0], Header{Type: FrameAck, Flags: uint16(status), Seq: seq, Epoch: epoch}, []byte(msg)))
	}
	// answer acks a frame, or sends a read's data.
	answer := func(h Header, status Status, msg string, data []byte, flush bool) error {
		if h.Type == FrameRead && status == StatusOK {
			return bw.Write(flush, AppendFrame(make([]byte, 0, headerSize+len(data)), Header{Type: FrameReadData, Seq: h.Seq, Epoch: epoch}, data))
		}
		return ack(h.Seq, status, msg, flush)
	}
	sem := make(chan struct{}, maxApplyInFlight)
	largeSem := make(chan struct{}, maxLargeInFlight) // bounds read-ahead memory
	// Payload buffers are recycled: at 1 MiB a frame, allocating each one
	// costs more in GC than the copy.
	bufs := make(chan []byte, maxApplyInFlight+1)
	recycle := func(p []byte) {
		if cap(p) >= 4096 && cap(p) <= 4<<20 {
			select {
			case bufs <- p[:cap(p)]:
			default:
			}
		}
	}
	wp := workers.New()
	defer wp.Close()
	finish := func(err error) error {
		wg.Wait()
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		return err
	}
	for {
		var buf []byte
		select {
		case buf = <-bufs:
		default:
		}
		h, p, err := ReadFrame(r, hdr[:], buf)
		if err != nil {
			return finish(err)
		}
		status, msg := s.checkFrame(ctx, t, from, epoch, h)
		if status == StatusOK {
			status, msg = g.check(sess)
		}
		if status != StatusOK {
			wg.Wait() // what came before is acknowledged first
			_ = ack(h.Seq, status, msg, true)
			if status == StatusStaleEpoch || status == StatusNotPrimary || status == StatusSuperseded {
				return finish(&refusal{status, msg})
			}
			continue
		}
		off, n := int64(h.Offset), int64(frameLength(h, p))
		more := r.Buffered() >= headerSize
		isLarge := n > largeFrame
		if !more && !isLarge && order.Idle() {
			// Nothing in flight and nothing queued (QD1): apply here, with
			// no hand-off to another goroutine.
			var data []byte
			status, msg := g.apply(sess, func() (st Status, m string) { st, m, data = s.applyFrame(ctx, t, h, p); return })
			recycle(p)
			if err := answer(h, status, msg, data, status != StatusOK || r.Buffered() < headerSize || !order.Idle()); err != nil {
				return finish(err)
			}
			if sa, ok := t.Store.(syncAheader); ok && status == StatusOK && h.Type == FrameWrite && r.Buffered() == 0 {
				// Idle until the primary's next frame, which the pattern
				// says is a flush: make this write (and, nothing being in
				// flight, everything before it) durable meanwhile, and say
				// so, sparing the flush its round trip here.
				if sa.SyncAhead(ctx) && synced {
					var fb [headerSize]byte
					if err := bw.Write(true, AppendFrame(fb[:0], Header{Type: FrameSynced, Seq: h.Seq, Epoch: epoch}, nil)); err != nil {
						return finish(err)
					}
				}
			}
			continue
		}
		var lk, llk *rangelock.Req[struct{}]
		if h.Type == FrameFlush {
			lk = order.Enqueue(0, 0, rangelock.AfterAll, struct{}{})
		} else {
			lk = order.Enqueue(off, off+n, 0, struct{}{})
		}
		if isLarge {
			llk = large.Enqueue(0, 1, 0, struct{}{})
		}
		sem <- struct{}{}
		if isLarge {
			largeSem <- struct{}{}
		}
		wg.Add(1)
		wp.Go(func() {
			defer wg.Done()
			// Frames are applied once queued, whatever ctx says: an
			// error ends the stream, not the frames already read.
			_ = order.Wait(context.Background(), lk)
			if llk != nil {
				_ = large.Wait(context.Background(), llk)
			}
			var data []byte
			status, msg := g.apply(sess, func() (st Status, m string) { st, m, data = s.applyFrame(ctx, t, h, p); return })
			recycle(p)
			if llk != nil {
				large.Release(llk)
			}
			order.Release(lk)
			_ = answer(h, status, msg, data, true) // a failed stream ends the reader too
			if isLarge {
				<-largeSem
			}
			<-sem
		})
	}
}

// frameLength is the byte range a frame touches.
func frameLength(h Header, p []byte) int {
	if h.Type == FrameWrite || h.Type == FrameResync {
		return len(p)
	}
	return int(h.Length)
}

// checkFrame is I1 for one frame: the session's and the frame's epoch
// must still be current and the sender its primary.
func (s *Secondary) checkFrame(ctx context.Context, t *Target, from string, epoch uint64, h Header) (Status, string) {
	v := t.Authority.View()
	if h.Epoch > v.Epoch {
		rctx, cancel := context.WithTimeout(ctx, s.refreshTimeout)
		nv, err := t.Authority.Refresh(rctx)
		cancel()
		if err != nil {
			return StatusFrozen, fmt.Sprintf("cannot confirm epoch %d: %v", h.Epoch, err)
		}
		v = nv
	}
	// The session's epoch must still be current too: a promotion elsewhere
	// ends this primary's right to write even mid-connection.
	if h.Epoch != epoch {
		return StatusStaleEpoch, fmt.Sprintf("frame epoch %d differs from the session's %d", h.Epoch, epoch)
	}
	if r := check(v, h.Epoch, from); r != nil {
		return r.status, r.msg
	}
	return StatusOK, ""
}

// takeRewrite reports (once) whether volume's replica asked for a full
// resync in a session (see stickySync).
func (s *Secondary) takeRewrite(volume string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.rewrite[volume]
	if ok {
		delete(s.rewrite, volume)
		s.rewriting.Add(-1)
	}
	return ok
}

// applyFrame applies one checked frame to the replica; a read returns its
// data.
func (s *Secondary) applyFrame(ctx context.Context, t *Target, h Header, p []byte) (Status, string, []byte) {
	var err error
	var data []byte
	if s.rewriting.Load() > 0 && h.Type != FrameRead && h.Type != FramePing {
		if ss, ok := t.Store.(stickySync); ok && s.takeRewrite(t.Name) {
			ss.ResetSyncError()
		}
	}
	switch h.Type {
	case FrameRead:
		if h.Length > MaxPayload {
			return StatusBadFrame, fmt.Sprintf("read of %d bytes exceeds %d", h.Length, MaxPayload), nil
		}
		data = make([]byte, h.Length)
		_, err = t.Store.ReadAt(ctx, data, int64(h.Offset))
	case FrameWrite, FrameResync:
		flags := blockstore.WriteFlags(0)
		if h.Flags&FlagFUA != 0 {
			flags |= blockstore.FUA
		}
		_, err = t.Store.WriteAt(ctx, p, int64(h.Offset), flags)
	case FrameFlush:
		err = t.Store.Flush(ctx)
	case FrameTrim:
		err = t.Store.Trim(ctx, int64(h.Offset), int64(h.Length))
	case FrameZero:
		flags := blockstore.WriteFlags(0)
		if h.Flags&FlagFUA != 0 {
			flags |= blockstore.FUA
		}
		if h.Flags&FlagNoHole != 0 {
			flags |= blockstore.NoHole
		}
		err = t.Store.WriteZeroes(ctx, int64(h.Offset), int64(h.Length), flags)
	case FramePing:
	default:
		return StatusBadFrame, fmt.Sprintf("unexpected %s frame", h.Type), nil
	}
	switch {
	case err == nil:
		return StatusOK, "", data
	case errors.Is(err, blockstore.ErrOutOfRange):
		return StatusOutOfRange, err.Error(), nil
	case errors.Is(err, blockstore.ErrFrozen):
		return StatusFrozen, err.Error(), nil
	}
	return StatusIO, err.Error(), nil
}

// flushWriter writes through a bufio.Writer and flushes it, so that each
// batch leaves as one TLS record.
type flushWriter struct{ w *bufio.Writer }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.w.Flush()
	}
	return n, err
}
