package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/rangelock"
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
	// SetState commits a resync transition (peer may be this node, for
	// its own re-attached disk).
	SetState(ctx context.Context, epoch uint64, peer string, s ReplicaState, reason string) error
	// Detach commits the primary's own replica Failed (its disk failed);
	// it wraps ErrNoUpToDatePeer when no other replica is UpToDate.
	Detach(ctx context.Context, epoch uint64, reason string) error
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
	// Full says the record has the peer Failed (a detached disk): no
	// bitmap covers what it misses, so its resync copies everything.
	Full bool
	// Reconcile says the record has the peer to be reconciled after a
	// change of primary: it may hold writes the old primary never got
	// acknowledged, where no bitmap of this primary says. Until
	// Reconciled, a resync of it copies everything (one after a fence
	// at start once copied only this primary's bitmap, and the record's
	// UpToDate then cleared the flag: the fault-schedule runner's seed
	// 7100, two ranges different after healing).
	Reconcile bool
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
	// PlainStream asks each peer, at every connection, for an unencrypted
	// data stream after the TLS handshake and hello (StreamPlain; see
	// leaveTLS); the peer's own setting decides too. Only for a dedicated,
	// trusted network. SetPlainStream changes it for later connections.
	PlainStream bool
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
	// Diskless starts with the local disk detached (the record has this
	// node's replica Failed): nothing is read from or written to it until
	// Reattach. DisklessCause is shown in status.
	Diskless      bool
	DisklessCause string
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

// Primary is a replicated volume on its primary node.
type Primary struct {
	cfg Config
	log *slog.Logger

	al     *activityLog
	frames bufpool.Pool // write frames

	rateMu sync.Mutex
	rate   int64         // resync limit, bytes per second
	rateCh chan struct{} // closed when rate changes

	plain atomic.Bool // ask peers for a plain data stream (Config.PlainStream)

	mu sync.Mutex
	// quiesced ranges hold new overlapping requests back (online verify).
	quiesced []*req
	nextSeq  uint64
	// order holds requests whose local I/O has not finished, enqueued
	// under mu in seq order: overlapping ones reach the local disk in
	// that order.
	order  rangelock.Lock[*req]
	frozen bool
	thaw   chan struct{} // closed when frozen ends
	// local is the local disk's attachment and localErr why it was
	// detached; detachDone is closed when a detach commit ends
	// (detach.go).
	local      localState
	localErr   error
	detachDone chan struct{}
	deposed    error
	closed     bool
	peers      []*peer
	stopping   chan struct{}
	// done is closed when the primary stops serving for good: retired,
	// deposed or closed (Done).
	done     chan struct{}
	doneOnce sync.Once
	wg       sync.WaitGroup

	acks ackRecord
}

// ackRecord is the primary's own record of what it acknowledged: the first
// and last acknowledgement at its epoch, logged ("writes acknowledged") at
// most once a second and at Close. The fault-schedule runner (package
// chaos) reads it from the log to check that no two epochs acknowledged in
// overlapping time; a SIGKILLed primary's last line may be up to a second
// short of its last acknowledgement.
type ackRecord struct {
	mu                 sync.Mutex
	first, last, saved time.Time
	count              uint64
}

// noteAck records one acknowledged write.
func (p *Primary) noteAck() {
	now := time.Now()
	r := &p.acks
	r.mu.Lock()
	if r.first.IsZero() {
		r.first = now
	}
	r.last = now
	r.count++
	logIt := now.Sub(r.saved) >= time.Second
	if logIt {
		r.saved = now
	}
	first, count := r.first, r.count
	r.mu.Unlock()
	if logIt {
		p.logAcks(first, now, count)
	}
}

func (p *Primary) logAcks(first, last time.Time, count uint64) {
	p.log.Info("writes acknowledged", "first_ns", first.UnixNano(), "last_ns", last.UnixNano(), "count", count)
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
	p := &Primary{cfg: cfg, log: cfg.Log.With("volume", cfg.Volume, "epoch", cfg.Epoch), nextSeq: 1, thaw: make(chan struct{}), stopping: make(chan struct{}), done: make(chan struct{})}
	close(p.thaw)
	p.rate, p.rateCh = max(cfg.ResyncRate, 0), make(chan struct{})
	p.plain.Store(cfg.PlainStream)
	if cfg.Diskless {
		p.local, p.localErr = localDetached, errors.New(cfg.DisklessCause)
		if cfg.DisklessCause == "" {
			p.localErr = errors.New("the record has this replica Failed")
		}
	}
	// With no peer there is nothing a crash could leave unreplicated.
	if cfg.ActivityLog && len(cfg.Peers) > 0 && !cfg.Diskless {
		p.al = newActivityLog(cfg.Local, cfg.ActivitySlot, cfg.ActivityExtent, cfg.ActivityIdle)
		p.wg.Add(1)
		go p.sweepActivity()
	}
	for _, pc := range cfg.Peers {
		pe := &peer{cfg: pc, state: peerOutdated, pending: map[uint64]*req{}, lastMod: noMod, busy: make(chan struct{}, 1)}
		pe.reconcile.Store(pc.Reconcile)
		p.peers = append(p.peers, pe)
	}
	// Regions still in the activity log from before a restart may hold
	// writes that no peer got. Write-ahead for every peer: its bitmap says
	// they may differ until the replay below confirms it has them, so any
	// resync of it (after a fence at start, a failed replay, a crash
	// during the replay, or because it was not in sync) includes them.
	var inherited [][2]int64
	if p.al != nil {
		cfg.Local.DirtyRanges(cfg.ActivitySlot, func(off, length int64) bool {
			inherited = append(inherited, [2]int64{off, length})
			return true
		})
		for _, pe := range p.peers {
			for _, r := range inherited {
				if err := cfg.Local.MarkDirty(ctx, pe.cfg.Slot, r[0], r[1]); err != nil {
					return nil, fmt.Errorf("activity log: mark its regions for peer %s: %w", pe.cfg.Name, err)
				}
			}
		}
	}
	for _, pe := range p.peers {
		if pe.cfg.Full && !cfg.Diskless {
			if err := cfg.Local.MarkDirty(ctx, pe.cfg.Slot, 0, cfg.Local.Size()); err != nil {
				return nil, fmt.Errorf("mark failed peer %s for a full resync: %w", pe.cfg.Name, err)
			}
		}
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
	if len(inherited) > 0 {
		p.wg.Add(1)
		go p.replayActivity(inherited)
	}
	return p, nil
}

// stopContext is a context that ends when the primary starts stopping, or
// when cancel is called.
func (p *Primary) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// replayActivity sends the regions of the activity log inherited from
// before a restart to every peer in sync, so they converge at once; a peer
// that takes them all has them cleared from its bitmap again. Peers not in
// sync get them with their resync (NewPrimary marked them).
func (p *Primary) replayActivity(ranges [][2]int64) {
	defer p.wg.Done()
	ctx, cancel := p.stopContext()
	defer cancel()
	p.mu.Lock()
	var insync []*peer
	for _, pe := range p.peers {
		if pe.state == peerInSync {
			insync = append(insync, pe)
		}
	}
	p.mu.Unlock()
	replayed := 0
	for _, pe := range insync {
		pe.mu.Lock()
		gen := pe.gen
		pe.mu.Unlock()
		if err := p.replayTo(ctx, pe, gen, ranges); err != nil {
			// The peer is fenced and resynced from its bitmap, which holds
			// these regions.
			p.log.Info("activity replay stopped; the peer resyncs them instead", "peer", pe.cfg.Name, "err", err)
			continue
		}
		replayed++
	}
	if ctx.Err() == nil {
		p.al.adopt(ranges)
	}
	p.log.Info("activity log replayed to in-sync peers", "ranges", len(ranges), "peers", replayed, "in_sync", len(insync))
}

func (p *Primary) replayTo(ctx context.Context, pe *peer, gen uint64, ranges [][2]int64) error {
	for _, r := range ranges {
		if err := p.Repair(ctx, pe.cfg.Name, r[0], r[1]); err != nil {
			return err
		}
	}
	// Same lock order as fail: while the peer is still in sync in the same
	// connection, every region above is durable on it, and a failure from
	// now on marks what it misses by itself.
	p.mu.Lock()
	defer p.mu.Unlock()
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.gen != gen || pe.state != peerInSync {
		return fmt.Errorf("peer %s left sync during the replay", pe.cfg.Name)
	}
	for _, r := range ranges {
		if err := p.cfg.Local.ClearDirty(ctx, pe.cfg.Slot, r[0], r[1]); err != nil {
			return fmt.Errorf("clear replayed regions: %w", err)
		}
	}
	return nil
}

// Size implements blockstore.Volume.
func (p *Primary) Size() int64 { return p.cfg.Local.Size() }

// ReadAt reads from the local replica, which holds every acknowledged
// write, or from an in-sync peer once the local disk is detached. A local
// read error detaches the disk and the read is served by a peer (DRBD).
func (p *Primary) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	p.mu.Lock()
	err := p.usableLocked()
	attached := p.local == localAttached
	p.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := blockstore.CheckRange(p.Size(), off, int64(len(b))); err != nil {
		return 0, fmt.Errorf("read %d+%d: %w", off, len(b), err)
	}
	if attached {
		n, err := p.cfg.Local.ReadAt(ctx, b, off)
		if err == nil || !p.localFault(err) {
			return n, err
		}
	}
	return p.readPeer(ctx, b, off)
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
	p.noteAck()
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
	p.mu.Lock()
	attached := p.local == localAttached
	p.mu.Unlock()
	if !attached {
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
	t := time.NewTimer(p.cfg.ActivityIdle / 2)
	defer t.Stop()
	for {
		if p.al.empty() {
			// Nothing to sweep: sleep until a region becomes active (a
			// ticker per idle volume was a wakeup every 2.5 s each).
			select {
			case <-p.stopping:
				return
			case <-p.al.busy:
			}
		}
		t.Reset(p.cfg.ActivityIdle / 2)
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
	p.finish()
	peers := p.peers
	p.mu.Unlock()
	p.acks.mu.Lock()
	first, last, count := p.acks.first, p.acks.last, p.acks.count
	p.acks.mu.Unlock()
	if count > 0 {
		p.logAcks(first, last, count)
	}
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
	return p.usableLocked()
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

// takeSeqLocked gives r the next sequence number if p is still usable;
// p.mu must be held, and stays held on both paths.
func (p *Primary) takeSeqLocked(r *req) error {
	if err := p.usableLocked(); err != nil {
		return err
	}
	r.seq = p.nextSeq
	p.nextSeq++
	return nil
}

// PeerStatus is one peer's replication state, for status output.
type PeerStatus struct {
	Name        string
	State       string
	DirtyBytes  int64
	Pending     int
	ResyncBytes int64
	// Stream is the data stream of the current or last connection:
	// StreamTLS, StreamPlain, or "" before the first one (or when the
	// Dialer's connection is not a *tls.Conn).
	Stream string
}

// Status reports each peer's state.
func (p *Primary) Status() []PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PeerStatus
	for _, pe := range p.peers {
		pe.mu.Lock()
		n, stream := len(pe.pending), pe.stream
		pe.mu.Unlock()
		out = append(out, PeerStatus{Name: pe.cfg.Name, State: pe.state.String(), DirtyBytes: p.cfg.Local.DirtyBytes(pe.cfg.Slot), Pending: n, ResyncBytes: pe.resyncSent.Load(), Stream: stream})
	}
	return out
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
	p.finish()
}

// Done is closed when this primary stops serving for good (Retire, a
// deposition, Close): what is connected to it must let go, as a client
// of a new primary on this node gets a new object.
func (p *Primary) Done() <-chan struct{} { return p.done }

func (p *Primary) finish() { p.doneOnce.Do(func() { close(p.done) }) }

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
	p.finish()
}

func (p *Primary) deposedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deposed
}
