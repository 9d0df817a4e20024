package replication

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/bufpool"
)

// Store is the primary's local replica: a volume plus a persistent dirty
// bitmap per peer slot.
type Store interface {
	blockstore.Volume
	// MarkDirty persists the bits before returning (write-ahead).
	MarkDirty(ctx context.Context, slot int, off, length int64) error
	ClearDirty(ctx context.Context, slot int, off, length int64) error
	DirtyRanges(slot int, fn func(off, length int64) bool)
	DirtyBytes(slot int) int64
}

// Fencer commits replica state changes through the volume's Raft shard.
type Fencer interface {
	// Outdate commits "peer Outdated" for the primary of epoch (fence-peer).
	Outdate(ctx context.Context, epoch uint64, peer, reason string) error
	// SetState commits a resync transition.
	SetState(ctx context.Context, epoch uint64, peer string, s ReplicaState, reason string) error
}

// Dialer opens an authenticated connection to a peer's replication port.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// PeerConfig describes one secondary.
type PeerConfig struct {
	Name string
	Addr string
	// Slot is the peer's dirty-bitmap slot in the local store.
	Slot int
	// InSync is true when the committed record says the peer is UpToDate;
	// otherwise it starts Outdated and is resynced when reachable.
	InSync bool
}

// Config configures a Primary.
type Config struct {
	Volume   string
	VolumeID string
	Node     string
	Epoch    uint64
	Local    Store
	Peers    []PeerConfig
	Dial     Dialer
	Fencer   Fencer
	Log      *slog.Logger
	// AckTimeout is how long a peer may sit on a request before it is
	// declared failed and fenced off. Default 5 s.
	AckTimeout time.Duration
	// ReconnectInterval paces reconnection attempts to lost peers. Default 1 s.
	ReconnectInterval time.Duration
	// ResyncRate limits resync traffic in bytes per second; 0 is unlimited.
	ResyncRate int64
	// ResyncChunk is the largest resync frame. Default 1 MiB.
	ResyncChunk int64
	// ActivityLog enables the activity log in the local bitmap slot
	// ActivitySlot (see activityLog).
	ActivityLog  bool
	ActivitySlot int
	// ActivityExtent is the unit the activity log marks and clears, a
	// multiple of the bitmap granularity. Large extents (DRBD uses 4 MiB)
	// keep random writes from paying a bitmap write each; the price is a
	// larger resync of a crashed primary's hot extents. Default 4 MiB.
	ActivityExtent int64
	// ActivityIdle is how long a region stays in the activity log after its
	// last write. Default 5 s.
	ActivityIdle time.Duration
}

// Errors surfaced to the front end. None of them means "acknowledged".
var (
	// ErrDeposed: a replica refused this primary's epoch; another node has
	// been promoted. Nothing more will be acknowledged.
	ErrDeposed = errors.New("this node is no longer the primary")
	// ErrPeerRefused wraps a secondary's typed refusal.
	ErrPeerRefused = errors.New("replica refused")
)

// RefusedError is a secondary's typed refusal (I1).
type RefusedError struct {
	Peer   string
	Status Status
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("replica %s refused: %s: %s", e.Peer, e.Status, e.Msg)
}

func (e *RefusedError) Unwrap() []error {
	if e.Status == StatusStaleEpoch || e.Status == StatusNotPrimary {
		return []error{ErrPeerRefused, ErrDeposed}
	}
	return []error{ErrPeerRefused}
}

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

// req is one request fanned out to the local store and the connected peers.
type req struct {
	seq      uint64
	kind     FrameType
	off, len int64
	frame    []byte
	// refs counts the frame's holders: the submitter and each peer queue
	// or send batch it is in. The last one recycles a pooled frame.
	refs      atomic.Int32
	pooled    bool
	started   time.Time
	localDone chan struct{}
	// ready, when set, is closed once frame is filled in: a resync chunk
	// takes its place in the peer's queue before its data is read.
	ready chan struct{}

	mu       sync.Mutex
	waiting  int
	err      error
	allDone  chan struct{}
	finished bool
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
	gen   uint64 // connection generation, to ignore late events of an old conn

	// reconnecting is set while the peer's one reconnect loop runs
	// (guarded by Primary.mu): two loops would open two connections to
	// the peer and take turns failing each other's resync.
	reconnecting bool

	resyncSent atomic.Int64
}

// Primary is a replicated volume on its primary node.
type Primary struct {
	cfg Config
	log *slog.Logger

	al     *activityLog
	frames bufpool.Pool // write frames

	rateMu sync.Mutex
	rate   int64         // resync limit, bytes per second
	rateCh chan struct{} // closed when rate changes

	mu sync.Mutex
	// quiesced ranges hold new overlapping requests back (online verify).
	quiesced []*req
	nextSeq  uint64
	active   []*req // requests whose local I/O has not finished, in seq order
	frozen   bool
	thaw     chan struct{} // closed when frozen ends
	deposed  error
	closed   bool
	peers    []*peer
	stopping chan struct{}
	wg       sync.WaitGroup
}

// NewPrimary starts replicating. Peers that are in sync are connected
// before it returns; a peer that cannot be reached is fenced off (which
// needs quorum) before the first write is acknowledged.
func NewPrimary(ctx context.Context, cfg Config) (*Primary, error) {
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.ReconnectInterval == 0 {
		cfg.ReconnectInterval = time.Second
	}
	if cfg.ResyncChunk == 0 {
		cfg.ResyncChunk = 1 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ActivityExtent == 0 {
		cfg.ActivityExtent = 4 << 20
	}
	if cfg.ActivityIdle == 0 {
		cfg.ActivityIdle = 5 * time.Second
	}
	p := &Primary{cfg: cfg, log: cfg.Log.With("volume", cfg.Volume, "epoch", cfg.Epoch), nextSeq: 1, thaw: make(chan struct{}), stopping: make(chan struct{})}
	close(p.thaw)
	p.rate, p.rateCh = max(cfg.ResyncRate, 0), make(chan struct{})
	// With no peer there is nothing a crash could leave unreplicated.
	if cfg.ActivityLog && len(cfg.Peers) > 0 {
		p.al = newActivityLog(cfg.Local, cfg.ActivitySlot, cfg.ActivityExtent, cfg.ActivityIdle)
		p.wg.Add(1)
		go p.sweepActivity()
	}
	for _, pc := range cfg.Peers {
		pe := &peer{cfg: pc, state: peerOutdated, pending: map[uint64]*req{}, lastMod: noMod}
		p.peers = append(p.peers, pe)
	}
	for _, pe := range p.peers {
		if !pe.cfg.InSync {
			p.startReconnect(pe)
			continue
		}
		pe.state = peerInSync
		if err := p.connect(ctx, pe); err != nil {
			p.log.Warn("in-sync peer unreachable at start; fencing it off", "peer", pe.cfg.Name, "err", err)
			p.fail(pe, pe.gen, err)
		}
	}
	if p.al != nil {
		// Regions still in the activity log from before a restart may hold
		// writes the peers never got: send them again.
		ranges, _ := ActivityRanges(cfg.Local, cfg.ActivitySlot)
		if len(ranges) > 0 {
			p.wg.Add(1)
			go p.replayActivity(ranges)
		}
	}
	return p, nil
}

func (p *Primary) replayActivity(ranges [][2]int64) {
	defer p.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	p.mu.Lock()
	var names []string
	for _, pe := range p.peers {
		if pe.state == peerInSync {
			names = append(names, pe.cfg.Name)
		}
	}
	p.mu.Unlock()
	for _, name := range names {
		for _, r := range ranges {
			if err := p.Repair(ctx, name, r[0], r[1]); err != nil {
				// A failed peer is fenced and resynced from its bitmap,
				// which the fence fills for anything unconfirmed.
				p.log.Info("activity replay stopped", "peer", name, "err", err)
				break
			}
		}
	}
	p.log.Info("activity log replayed to in-sync peers", "ranges", len(ranges), "peers", len(names))
}

// Size implements blockstore.Volume.
func (p *Primary) Size() int64 { return p.cfg.Local.Size() }

// ReadAt reads from the local replica, which holds every acknowledged write.
func (p *Primary) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	if err := p.usable(); err != nil {
		return 0, err
	}
	return p.cfg.Local.ReadAt(ctx, b, off)
}

// WriteAt replicates a write (protocol C).
func (p *Primary) WriteAt(ctx context.Context, b []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	if err := blockstore.CheckRange(p.Size(), off, int64(len(b))); err != nil {
		return 0, fmt.Errorf("write %d+%d: %w", off, len(b), err)
	}
	var f uint16
	if flags&blockstore.FUA != 0 {
		f |= FlagFUA
	}
	err := p.submit(ctx, FrameWrite, off, int64(len(b)), f, flags&blockstore.More != 0, b, func(ctx context.Context) error {
		_, err := p.cfg.Local.WriteAt(ctx, b, off, flags&^blockstore.More)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// SyncAhead makes the local replica's completed writes durable ahead of a
// flush the client's pattern predicts (see blockstore.LocalVolume); the
// secondaries do the same on their own. It only matters with secondaries:
// the flush then waits for the network alone.
func (p *Primary) SyncAhead(ctx context.Context) bool {
	sa, ok := p.cfg.Local.(syncAheader)
	if !ok || len(p.peers) == 0 || p.usable() != nil {
		return false
	}
	return sa.SyncAhead(ctx)
}

// Flush makes every completed write durable on every in-sync replica.
func (p *Primary) Flush(ctx context.Context) error {
	return p.submit(ctx, FrameFlush, 0, 0, 0, false, nil, p.cfg.Local.Flush)
}

// Trim replicates a discard.
func (p *Primary) Trim(ctx context.Context, off, length int64) error {
	if err := blockstore.CheckRange(p.Size(), off, length); err != nil {
		return fmt.Errorf("trim %d+%d: %w", off, length, err)
	}
	return p.submit(ctx, FrameTrim, off, length, 0, false, nil, func(ctx context.Context) error {
		return p.cfg.Local.Trim(ctx, off, length)
	})
}

// WriteZeroes replicates a zeroing write.
func (p *Primary) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	if err := blockstore.CheckRange(p.Size(), off, length); err != nil {
		return fmt.Errorf("write zeroes %d+%d: %w", off, length, err)
	}
	var f uint16
	if flags&blockstore.FUA != 0 {
		f |= FlagFUA
	}
	if flags&blockstore.NoHole != 0 {
		f |= FlagNoHole
	}
	return p.submit(ctx, FrameZero, off, length, f, false, nil, func(ctx context.Context) error {
		return p.cfg.Local.WriteZeroes(ctx, off, length, flags)
	})
}

func (p *Primary) sweepActivity() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.ActivityIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-p.stopping:
			return
		case <-t.C:
			p.al.sweep(context.Background())
		}
	}
}

// Close stops replication; it does not close the local store.
func (p *Primary) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stopping)
	peers := p.peers
	p.mu.Unlock()
	for _, pe := range peers {
		pe.mu.Lock()
		if pe.conn != nil {
			pe.conn.Close()
		}
		pe.mu.Unlock()
	}
	p.wg.Wait()
	return nil
}

func (p *Primary) usable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return blockstore.ErrClosed
	case p.deposed != nil:
		return p.deposed
	}
	return nil
}

// PeerStatus is one peer's replication state, for status output.
type PeerStatus struct {
	Name        string
	State       string
	DirtyBytes  int64
	Pending     int
	ResyncBytes int64
}

// Status reports each peer's state.
func (p *Primary) Status() []PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PeerStatus
	for _, pe := range p.peers {
		pe.mu.Lock()
		n := len(pe.pending)
		pe.mu.Unlock()
		out = append(out, PeerStatus{Name: pe.cfg.Name, State: pe.state.String(), DirtyBytes: p.cfg.Local.DirtyBytes(pe.cfg.Slot), Pending: n, ResyncBytes: pe.resyncSent.Load()})
	}
	return out
}

// submit runs one request: ordered registration, fan-out, local I/O, dirty
// marking for fenced peers, then waiting for every connected peer.
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
	r := &req{kind: kind, off: off, len: length, frame: frame, pooled: kind == FrameWrite && frame != nil, started: time.Now(), localDone: make(chan struct{}), allDone: make(chan struct{})}
	r.refs.Store(1)
	defer p.release(r)
	if p.al != nil && kind != FrameFlush {
		// Write-ahead: the region is in the activity log before any disk
		// can see the request.
		if err := p.al.begin(ctx, off, length); err != nil {
			return fmt.Errorf("activity log: %w", err)
		}
		defer p.al.end(off, length)
	}

	p.mu.Lock()
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
	if err := p.usableLocked(); err != nil {
		p.mu.Unlock()
		return err
	}
	r.seq = p.nextSeq
	p.nextSeq++
	if r.frame != nil {
		binary.BigEndian.PutUint64(r.frame[8:], r.seq)
	}
	deps := p.overlappingLocked(r)
	p.active = append(p.active, r)
	var fenced []int
	var targets []*peer
	for _, pe := range p.peers {
		switch pe.state {
		case peerInSync, peerSyncing:
			if kind == FrameFlush && pe.durable() {
				continue // it reported every write it has durable
			}
			targets = append(targets, pe)
		case peerFencing:
			// Frozen prevents this; kept for clarity.
		default:
			fenced = append(fenced, pe.cfg.Slot)
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

	// Overlapping earlier requests reach the local disk first.
	for _, d := range deps {
		<-d.localDone
	}
	lerr := local(ctx)
	close(r.localDone)
	p.mu.Lock()
	for i, a := range p.active {
		if a == r {
			p.active = append(p.active[:i], p.active[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	if lerr == nil && kind != FrameFlush {
		// Fenced peers miss this write: record it before acknowledging (I2, I4).
		for _, slot := range fenced {
			if err := p.cfg.Local.MarkDirty(ctx, slot, off, length); err != nil {
				lerr = fmt.Errorf("mark dirty for a fenced peer: %w", err)
				break
			}
		}
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
	return err
}

func (p *Primary) usableLocked() error {
	switch {
	case p.closed:
		return blockstore.ErrClosed
	case p.deposed != nil:
		return p.deposed
	}
	return nil
}

func (p *Primary) quiescedLocked(r *req) *req {
	for _, q := range p.quiesced {
		if r.kind == FrameFlush || (q.off < r.off+r.len && r.off < q.off+q.len) {
			return q
		}
	}
	return nil
}

// overlappingLocked lists active requests whose range overlaps r's. A flush
// orders after everything active, and everything orders after a flush.
func (p *Primary) overlappingLocked(r *req) []*req {
	var out []*req
	for _, a := range p.active {
		if r.kind == FrameFlush || a.kind == FrameFlush || (a.off < r.off+r.len && r.off < a.off+a.len) {
			out = append(out, a)
		}
	}
	return out
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
	pe.pending[r.seq] = r
	if r.kind != FrameFlush {
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
	ack, err := p.hello(dctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ack.Status != StatusOK {
		conn.Close()
		return nil, &RefusedError{Peer: pe.cfg.Name, Status: ack.Status, Msg: ack.Message}
	}
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

func (p *Primary) hello(ctx context.Context, conn net.Conn) (*HelloAck, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	b, err := json.Marshal(Hello{Volume: p.cfg.Volume, From: p.cfg.Node, Epoch: p.cfg.Epoch, Size: p.Size(), VolumeID: p.cfg.VolumeID, Synced: true})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(AppendFrame(nil, Header{Type: FrameHello, Epoch: p.cfg.Epoch}, b)); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	var hdr [headerSize]byte
	h, payload, err := ReadFrame(conn, hdr[:], nil)
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
		if h.Type != FrameAck {
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
		st := Status(h.Flags)
		switch st {
		case StatusOK:
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
			// The peer could not apply it (I/O error, frozen): fence it.
			pe.mu.Lock()
			pe.pending[h.Seq] = rq
			pe.mu.Unlock()
			p.fail(pe, gen, &RefusedError{Peer: pe.cfg.Name, Status: st, Msg: string(payload)})
			return
		}
	}
}

func (p *Primary) watchdog(pe *peer, conn net.Conn, gen uint64, stop chan struct{}) {
	t := time.NewTicker(p.cfg.AckTimeout / 4)
	defer t.Stop()
	for {
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
		pe.mu.Unlock()
		if !oldest.IsZero() && time.Since(oldest) > p.cfg.AckTimeout {
			p.fail(pe, gen, fmt.Errorf("no answer for %s", time.Since(oldest).Round(time.Millisecond)))
			conn.Close()
			return
		}
	}
}

// Retire stops this primary for good after it handed the volume over:
// requests waiting (for example behind Quiesced) and later ones fail with
// err and touch no disk.
func (p *Primary) Retire(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deposed == nil {
		p.deposed = err
		if p.frozen {
			p.frozen = false
			close(p.thaw)
		}
	}
}

// depose stops this primary for good: a replica saw a newer epoch.
func (p *Primary) depose(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deposed == nil {
		p.deposed = fmt.Errorf("%w: %w", ErrDeposed, err)
		p.log.Error("deposed: a replica refused this primary's epoch; no further writes", "err", err)
		if p.frozen {
			p.frozen = false
			close(p.thaw)
		}
	}
}

// fail fences a peer off: freeze new acknowledgements, commit "peer
// Outdated" through the shard, mark what the peer missed, thaw. Without
// quorum the commit keeps failing and I/O stays frozen (never acknowledged).
func (p *Primary) fail(pe *peer, gen uint64, cause error) {
	p.mu.Lock()
	pe.mu.Lock()
	if pe.gen != gen || (pe.state != peerInSync && pe.state != peerSyncing) || p.closed {
		pe.mu.Unlock()
		p.mu.Unlock()
		return
	}
	prev := pe.state
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
	for _, r := range pending {
		var err error
		if r.kind != FrameFlush && r.len > 0 {
			err = p.cfg.Local.MarkDirty(context.Background(), pe.cfg.Slot, r.off, r.len)
		}
		r.resolve(err)
	}
	p.mu.Lock()
	pe.state = peerOutdated
	stillFencing := false
	for _, o := range p.peers {
		stillFencing = stillFencing || o.state == peerFencing
	}
	if !stillFencing && p.frozen {
		p.frozen = false
		close(p.thaw)
	}
	p.mu.Unlock()
	p.log.Warn("peer fenced off (Outdated); continuing without it", "peer", pe.cfg.Name, "dirty_bytes", p.cfg.Local.DirtyBytes(pe.cfg.Slot))
	p.startReconnect(pe)
}

func (p *Primary) deposedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deposed
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
		for {
			select {
			case <-p.stopping:
				return
			case <-time.After(p.cfg.ReconnectInterval):
			}
			if p.usable() != nil {
				return
			}
			p.mu.Lock()
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
