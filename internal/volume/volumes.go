package volume

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/units"
	"github.com/tandemhci/tandem/replication"
)

// nodeVolume is one volume on this node.
type nodeVolume struct {
	m       *Manager
	entry   consensus.VolumeEntry
	witness bool
	store   *blockstore.LocalVolume
	// peers lists the other replicas in bitmap-slot order.
	peers []string
	vols  Shard

	rec     atomic.Pointer[consensus.VolumeRecord]
	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}

	attached atomic.Int32 // NBD connections using the export
	// unrelated is set when the local replica holds another volume's data.
	unrelated bool

	mu           sync.Mutex // guards primary, primaryEpoch, ownState
	primary      *replication.Primary
	primaryEpoch uint64
	// ownState is this node's replica state in the last record reconcile
	// saw, to report its disk's detach and re-attach as cluster events.
	ownState consensus.ReplicaState
	// disklessRetry paces restarts of a primary that stopped diskless
	// (restartDiskless): when the next may be, and the wait after it.
	disklessRetry     time.Time
	disklessRetryWait time.Duration
	// realigning is set while a Realign of the primary runs (one at a
	// time: each does a linearizable read).
	realigning atomic.Bool

	// handoverMu serialises handovers on the primary, takeoverMu the
	// migration target's takeover.
	handoverMu, takeoverMu sync.Mutex
}

// volumeDir is where this node keeps volume files: its first disk, or a
// directory in the data dir when no disk is configured.
func (m *Manager) volumeDir() string {
	for _, disk := range m.st.Config.Disks {
		if info, err := blockstore.ProbeDisk(disk); err == nil && info.Kind == blockstore.DiskDir {
			return disk
		}
	}
	return filepath.Join(m.st.Config.DataDir, "volumes")
}

// volumeUUID is the same on every replica of a volume, so that a replica of
// another volume (or an older one of the same name) is recognised as
// unrelated data.
func volumeUUID(clusterID string, e consensus.VolumeEntry) [16]byte {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", clusterID, e.Name, e.ShardID))
	var id [16]byte
	copy(id[:], h[:16])
	return id
}

func peersOf(e consensus.VolumeEntry, self string) []string {
	var out []string
	for _, r := range e.Replicas {
		if r != self {
			out = append(out, r)
		}
	}
	return out
}

// shardMembers maps each data replica's node to its shard replica ID (the
// node's metadata replica ID, unique and stable) and Raft address.
func shardMembers(ms *consensus.MetaState, names []string) (map[uint64]string, error) {
	out := map[uint64]string{}
	for _, n := range names {
		rec, ok := ms.Nodes[n]
		if !ok {
			return nil, fmt.Errorf("node %s is not in the cluster", n)
		}
		out[rec.ReplicaID] = rec.RaftAddr
	}
	return out, nil
}

// open starts this node's part of a volume. With create it makes the local
// replica and bootstraps the shard; without, it reopens both after a restart.
func (m *Manager) open(ctx context.Context, e consensus.VolumeEntry, create bool) error {
	self := m.self()
	isReplica := slices.Contains(e.Replicas, self)
	isWitness := e.Witness == self
	if !isReplica && !isWitness {
		return fmt.Errorf("node %s holds no replica of volume %s", self, e.Name)
	}
	m.mu.Lock()
	if _, ok := m.vols[e.Name]; ok {
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	meta, shards, replicaID := m.meta(), m.st.Shards(), m.replicaID()
	if meta == nil || shards == nil || replicaID == 0 {
		return errors.New("this node is not in a cluster")
	}
	cl, _ := m.st.Cluster()
	var ms *consensus.MetaState
	var err error
	if create {
		// The shard's initial members come from the catalog; a restart
		// finds them in the shard's own Raft data instead.
		if ms, err = meta.LocalState(); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
	}
	nv := &nodeVolume{m: m, entry: e, witness: isWitness && !isReplica, peers: peersOf(e, self),
		vols: shards, changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	spec := consensus.ShardSpec{ShardID: e.ShardID, ReplicaID: replicaID}
	if nv.witness {
		spec.Role = consensus.Witness
		spec.Join = create
	} else {
		if err := nv.openStore(ctx, cl.ID, create); err != nil {
			return err
		}
		if create {
			if spec.Members, err = shardMembers(ms, e.Replicas); err != nil {
				nv.store.Close()
				return err
			}
		}
	}
	if err := nv.vols.StartObserved(spec, nv.observe); err != nil && !errors.Is(err, consensus.ErrShardRunning) {
		if nv.store != nil {
			nv.store.Close()
		}
		return fmt.Errorf("start shard %d of volume %s: %w", e.ShardID, e.Name, err)
	}
	m.mu.Lock()
	m.vols[e.Name] = nv
	err = m.saveLocalListLocked()
	m.mu.Unlock()
	if err != nil {
		m.log.Error("cannot record the volume list; it will not be reopened after a restart", "err", err)
	}
	go nv.run()
	m.log.Info("volume opened", "volume", e.Name, "shard", e.ShardID, "witness", nv.witness, "create", create)
	return nil
}

func (nv *nodeVolume) openStore(ctx context.Context, clusterID string, create bool) error {
	e := nv.entry
	dir := nv.m.volumeDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("volume dir: %w", err)
	}
	path := filepath.Join(dir, e.Name+".vol")
	_, statErr := os.Stat(path)
	fresh := create && errors.Is(statErr, os.ErrNotExist)
	if fresh {
		// One slot per peer plus the activity log's.
		opts := blockstore.CreateOptions{MaxPeers: len(nv.peers) + 1, VolumeID: volumeUUID(clusterID, e), DiskState: blockstore.DiskUpToDate}
		if err := createReplica(nv.m.self(), path, e.Size, opts); err != nil {
			return err
		}
	}
	store, err := blockstore.Open(path, blockstore.OpenOptions{Logger: nv.m.log})
	if err != nil {
		return fmt.Errorf("open replica: %w", err)
	}
	if got, want := store.Meta().VolumeID, volumeUUID(clusterID, e); got != want {
		// Keep it open but untouched: primaries are refused (diverged) and
		// the operator decides with 'tandem volume resync --discard'.
		nv.m.log.Error("replica holds another volume's data; refusing replication to it until an operator discards it",
			"volume", e.Name, "path", path, "id", hex.EncodeToString(got[:]), "want", hex.EncodeToString(want[:]))
		nv.unrelated = true
		nv.store = store
		return nil
	}
	if err := growToCatalog(ctx, store, e.Size); err != nil { // it missed a grow (grow.go)
		store.Close()
		return fmt.Errorf("grow replica to the volume's %d bytes: %w", e.Size, err)
	}
	if store.Meta().MaxPeers < len(nv.peers)+1 {
		store.Close()
		return fmt.Errorf("%s has %d bitmap slots, %d needed", path, store.Meta().MaxPeers, len(nv.peers)+1)
	}
	slots := append(slices.Clone(nv.peers), activitySlotName)
	for slot, peer := range slots {
		if err := store.AssignPeer(ctx, slot, peer); err != nil {
			store.Close()
			return fmt.Errorf("assign peer slot: %w", err)
		}
		if fresh {
			// Every replica of a new volume starts as the same zeroes.
			if err := store.ClearDirty(ctx, slot, 0, e.Size); err != nil {
				store.Close()
				return err
			}
		}
	}
	if fresh {
		if err := store.Flush(ctx); err != nil {
			store.Close()
			return err
		}
	}
	nv.store = store
	return nil
}

// createReplica makes a new replica file. Lack of space comes back
// wrapping syscall.ENOSPC (see openStatus), worded for an operator.
func createReplica(node, path string, size int64, opts blockstore.CreateOptions) error {
	dir := filepath.Dir(path)
	if info, err := blockstore.ProbeDisk(dir); err == nil && info.Free < size {
		return fmt.Errorf("node %s has %s free in %s; the volume needs %s: %w", node, units.FormatBytes(info.Free), dir, units.FormatBytes(size), syscall.ENOSPC)
	}
	err := blockstore.Create(path, size, opts)
	if errors.Is(err, syscall.ENOSPC) {
		// The check above passed, but the metadata area or a concurrent
		// allocation did not fit.
		free := "too little space"
		if info, perr := blockstore.ProbeDisk(dir); perr == nil {
			free = units.FormatBytes(info.Free)
		}
		return fmt.Errorf("node %s has %s free in %s; the volume needs %s plus its metadata: %w", node, free, dir, units.FormatBytes(size), err)
	}
	if err != nil {
		return fmt.Errorf("create replica: %w", err)
	}
	return nil
}

// activitySlotName names the bitmap slot used as the activity log; it comes
// after the peers' slots.
const activitySlotName = "@activity"

func (nv *nodeVolume) activitySlot() int { return len(nv.peers) }

// initRecord writes the volume's first record and adds the witness. It runs
// on the initial primary once every data replica has started its shard.
func (m *Manager) initRecord(ctx context.Context, e consensus.VolumeEntry) error {
	m.mu.Lock()
	nv, ok := m.vols[e.Name]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("volume %s is not open on this node", e.Name)
	}
	rec := consensus.VolumeRecord{Name: e.Name, ShardID: e.ShardID, Size: e.Size, Primary: e.Replicas[0], Witness: e.Witness, Replicas: map[string]*consensus.ReplicaRecord{}}
	for _, r := range e.Replicas {
		rec.Replicas[r] = &consensus.ReplicaRecord{State: consensus.UpToDate}
	}
	if _, err := nv.vols.Init(ctx, rec); err != nil {
		return fmt.Errorf("init volume record: %w", err)
	}
	if e.Witness == "" {
		return nil
	}
	meta, host := m.meta(), m.host()
	if meta == nil || host == nil {
		return errors.New("this node is not in a cluster")
	}
	ms, err := meta.LocalState()
	if err != nil {
		return err
	}
	w, ok := ms.Nodes[e.Witness]
	if !ok {
		return fmt.Errorf("witness %s is not in the cluster", e.Witness)
	}
	mem, err := host.Membership(ctx, e.ShardID)
	if err != nil {
		return err
	}
	if _, ok := mem.Witnesses[w.ReplicaID]; ok {
		return nil
	}
	return host.AddReplica(ctx, e.ShardID, w.ReplicaID, w.RaftAddr, consensus.Witness)
}

// halt stops nv's loop, waits for it to end, then closes its primary if
// it has one.
func (nv *nodeVolume) halt() {
	close(nv.stop)
	<-nv.done
	nv.mu.Lock()
	if nv.primary != nil {
		nv.primary.Close()
		nv.primary = nil
	}
	nv.mu.Unlock()
}

// close stops this node's part of a volume. destroy deletes the replica's
// data; forget also deletes the shard's Raft data (the volume is gone for
// good, unlike a discard, where the replica rejoins its shard).
func (m *Manager) close(name string, destroy, forget bool) error {
	m.mu.Lock()
	nv, ok := m.vols[name]
	_, unopened := m.unopened[name]
	delete(m.unopened, name) // its retries end at their next look
	if ok || unopened {
		delete(m.vols, name)
		if err := m.saveLocalListLocked(); err != nil {
			m.log.Error("cannot record the volume list", "err", err)
		}
	}
	m.mu.Unlock()
	if !ok {
		if destroy {
			// Not open here (it failed to reopen after a restart, say): the
			// file of that name can only belong to the volume going away.
			path := filepath.Join(m.volumeDir(), name+".vol")
			if err := os.Remove(path); err == nil {
				m.log.Warn("removed the replica file of a volume that was not open", "volume", name, "path", path)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	nv.halt()
	var errs []error
	if host := m.host(); host != nil {
		if err := host.StopShard(nv.entry.ShardID); err != nil {
			errs = append(errs, err)
		}
		if id := m.replicaID(); forget && id != 0 {
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			if err := host.RemoveShardData(ctx, nv.entry.ShardID, id); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
	}
	if nv.store != nil {
		path := nv.store.Path()
		if err := nv.store.Close(); err != nil {
			errs = append(errs, err)
		}
		if destroy {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sweepInterval paces SweepDeleted.
const sweepInterval = 10 * time.Second

// SweepDeleted removes, now and then, the replicas of volumes that the
// catalog no longer holds or holds as deleting: a node that was down during
// a delete cleans up when it is back. Only a linearizable catalog read
// decides, never this node's possibly lagging copy (a volume whose creation
// it has not applied yet must not look deleted).
func (m *Manager) SweepDeleted(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		m.sweepOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) sweepOnce(ctx context.Context) {
	meta := m.meta()
	if meta == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, m.quorumTimeout)
	ms, err := meta.State(rctx)
	cancel()
	if err != nil {
		return // no quorum: decide nothing
	}
	m.mu.Lock()
	held := make([]consensus.VolumeEntry, 0, len(m.vols))
	for _, nv := range m.vols {
		held = append(held, nv.entry)
	}
	m.mu.Unlock()
	for _, h := range held {
		var why string
		switch e, ok := ms.Volumes[h.Name]; {
		case !ok:
			why = "the volume is not in the catalog"
		case e.ShardID != h.ShardID:
			why = fmt.Sprintf("the catalog's volume of that name has shard %d", e.ShardID)
		case e.State == consensus.VolumeDeleting:
			why = "the volume is being deleted"
		default:
			continue
		}
		m.log.Warn("removing the replica of a deleted volume", "volume", h.Name, "shard", h.ShardID, "why", why)
		if err := m.close(h.Name, true, true); err != nil {
			m.log.Error("cannot remove the replica of a deleted volume", "volume", h.Name, "err", err)
		}
	}
	m.reconcileRBD(ctx, ms)
}

// Restore reopens every volume this node holds after a restart. The list
// is kept on the node itself so that it needs neither quorum nor a caught-up
// metadata replica.
func (m *Manager) Restore(ctx context.Context) {
	entries, err := m.loadLocalList()
	if err != nil {
		m.log.Error("cannot list this node's volumes to reopen them", "err", err)
		return
	}
	for _, e := range entries {
		if err := m.open(ctx, e, false); err != nil {
			m.log.Error("cannot reopen volume; retrying in the background", "volume", e.Name, "err", err)
			m.mu.Lock()
			m.unopened[e.Name] = e
			m.mu.Unlock()
			go m.reopenLater(ctx, e)
		}
	}
}

// reopenLater retries opening a volume Restore could not, until it opens,
// ctx ends, or the catalog no longer has this node hold it. A disk error
// at the moment of the restart must not leave the replica closed for as
// long as tandemd runs: its shard member would stay down and the primary
// could never resync it (chaos seed 2022: read errors on the replica for
// 1.4 s across a restart, the replica Outdated for good).
func (m *Manager) reopenLater(ctx context.Context, e consensus.VolumeEntry) {
	wait := reopenFirst
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		m.mu.Lock()
		_, open := m.vols[e.Name]
		_, pending := m.unopened[e.Name]
		m.mu.Unlock()
		if open || !pending {
			m.forgetUnopened(e.Name)
			return
		}
		if meta := m.meta(); meta != nil {
			if ms, err := meta.LocalState(); err == nil {
				if cur, ok := ms.Volumes[e.Name]; !ok || cur.ShardID != e.ShardID || !(slices.Contains(cur.Replicas, m.self()) || cur.Witness == m.self()) {
					m.log.Warn("a volume that failed to reopen is no longer this node's; not retrying", "volume", e.Name)
					m.forgetUnopened(e.Name)
					return
				}
			}
		}
		err := m.open(ctx, e, false)
		if err == nil {
			m.forgetUnopened(e.Name)
			m.log.Warn("volume reopened after failing to open at start", "volume", e.Name, "attempts", attempt)
			return
		}
		wait = min(2*wait, reopenMax)
		m.log.Error("cannot reopen volume; retrying", "volume", e.Name, "attempt", attempt, "in", wait, "err", err)
	}
}

// The reopen retries back off from reopenFirst to reopenMax: a disk that
// is back is found within seconds, one that stays broken costs a read a
// minute.
const (
	reopenFirst = time.Second
	reopenMax   = time.Minute
)

// forgetUnopened drops name from the volumes waiting to reopen, and from
// the local list if it is not open either.
func (m *Manager) forgetUnopened(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.unopened[name]; !ok {
		return
	}
	delete(m.unopened, name)
	if err := m.saveLocalListLocked(); err != nil {
		m.log.Error("cannot record the volume list", "err", err)
	}
}

func (m *Manager) loadLocalList() ([]consensus.VolumeEntry, error) {
	b, err := os.ReadFile(m.listFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []consensus.VolumeEntry
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", m.listFile, err)
	}
	return out, nil
}

// saveLocalList records which volumes this node holds; called with m.mu held.
func (m *Manager) saveLocalListLocked() error {
	list := make([]consensus.VolumeEntry, 0, len(m.vols)+len(m.unopened))
	for _, nv := range m.vols {
		list = append(list, nv.entry)
	}
	for name, e := range m.unopened {
		if _, ok := m.vols[name]; !ok {
			list = append(list, e) // still this node's, to reopen at the next start
		}
	}
	slices.SortFunc(list, func(a, b consensus.VolumeEntry) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return nodedir.WriteFileAtomic(m.listFile, b, 0o600)
}

// CloseAll stops every volume here without touching its shard: the
// daemon is shutting down.
func (m *Manager) CloseAll() {
	m.mu.Lock()
	names := make([]string, 0, len(m.vols))
	for n := range m.vols {
		names = append(names, n)
	}
	m.mu.Unlock()
	for _, n := range names {
		_ = m.closeLocal(n)
	}
	m.closeAllRBD("the daemon is stopping")
}

// closeLocal stops a volume without touching its shard (the host is closing).
func (m *Manager) closeLocal(name string) error {
	m.mu.Lock()
	nv, ok := m.vols[name]
	delete(m.vols, name)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	nv.halt()
	if nv.store != nil {
		return nv.store.Close()
	}
	return nil
}

// observe runs on the shard's apply path: store and signal, never block.
func (nv *nodeVolume) observe(r *consensus.VolumeRecord) {
	nv.rec.Store(r)
	select {
	case nv.changed <- struct{}{}:
	default:
	}
}

// View implements replication.Authority.
func (nv *nodeVolume) View() replication.View {
	r := nv.rec.Load()
	if r == nil {
		return replication.View{}
	}
	return replication.View{Epoch: r.Epoch, Primary: r.Primary}
}

// Refresh implements replication.Authority with a linearizable read.
func (nv *nodeVolume) Refresh(ctx context.Context) (replication.View, error) {
	r, err := nv.vols.Record(ctx, nv.entry.ShardID)
	if err != nil {
		return replication.View{}, err
	}
	if cur := nv.rec.Load(); cur == nil || cur.Applied <= r.Applied {
		nv.rec.Store(r)
	}
	return replication.View{Epoch: r.Epoch, Primary: r.Primary}, nil
}

func (nv *nodeVolume) run() {
	defer close(nv.done)
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		var tick <-chan time.Time
		if d := nv.tickEvery(); d > 0 {
			t.Reset(d)
			tick = t.C
		}
		select {
		case <-nv.stop:
			return
		case <-nv.changed:
		case <-tick:
		}
		nv.reconcile()
	}
}

// tickEvery is how often reconcile has timed work for this volume (0:
// none). Only on the node that is, or is to stop being, its primary (retries after a
// failed start, the diskless restart's backoff, the resync rate). A
// secondary or a witness reconciles when its record changes, not every
// second: with 1000 volumes that was a thousand wakeups a second per node
// for nothing (issue 17).
//
// A primary at rest (atRest) has no timed work either, only checks that a
// change of its record would trigger anyway; it reconciles every
// restPoll, as a safety net. With 1000 volumes, a second each was a third
// of the reconciles a node ran at rest (issue 17).
func (nv *nodeVolume) tickEvery() time.Duration {
	if nv.witness {
		return 0
	}
	r := nv.rec.Load()
	nv.mu.Lock()
	defer nv.mu.Unlock()
	switch {
	case r != nil && r.Primary != nv.m.self():
		if nv.primary != nil {
			return time.Second
		}
		return 0
	case r != nil && nv.atRest(r):
		return restPoll
	}
	return time.Second
}

// restPoll is how often a primary at rest reconciles.
const restPoll = 10 * time.Second

// atRest reports whether this node's primary runs with nothing to
// converge: its own replica and every peer UpToDate in the record and
// linked in sync, none to reconcile, no realign running, not stopped
// diskless, at the record's epoch. nv.mu held.
func (nv *nodeVolume) atRest(r *consensus.VolumeRecord) bool {
	p := nv.primary
	if p == nil || r.Epoch != nv.primaryEpoch || p.StoppedDiskless() || nv.realigning.Load() {
		return false
	}
	return allInSync(r, p.Status())
}

// allInSync reports whether the record names every replica UpToDate with
// none to reconcile, and the primary links every peer in sync.
func allInSync(r *consensus.VolumeRecord, links []replication.PeerStatus) bool {
	for _, rr := range r.Replicas {
		if rr.State != consensus.UpToDate || rr.Reconcile {
			return false
		}
	}
	for _, l := range links {
		if l.State != "in-sync" {
			return false
		}
	}
	return true
}

// restartDiskless closes a primary that stopped diskless (its disk
// detached, its last in-sync peer lost) so that reconcile starts a fresh
// one, which connects to the peers the record names UpToDate and serves
// through them once one is back. Without it the volume stayed unavailable
// until tandemd restarted, though an UpToDate replica was up again (found
// by the fault-schedule runner, package chaos, seed 200 of its disk-fault
// profile). Restarts back off from 1s to 30s while the peer stays away,
// and start over once a fresh primary runs. nv.mu held.
func (nv *nodeVolume) restartDiskless() bool {
	now := time.Now()
	if !nv.primary.StoppedDiskless() {
		if now.After(nv.disklessRetry.Add(nv.disklessRetryWait)) {
			nv.disklessRetryWait = 0 // it has served a while: start over
		}
		return false
	}
	if now.Before(nv.disklessRetry) {
		return false
	}
	nv.disklessRetryWait = min(max(2*nv.disklessRetryWait, time.Second), 30*time.Second)
	nv.disklessRetry = now.Add(nv.disklessRetryWait)
	nv.m.log.Info("diskless primary stopped for lack of an in-sync peer; starting it again to reach the peers the record names UpToDate",
		"volume", nv.entry.Name, "next_attempt_in", nv.disklessRetryWait)
	nv.primary.Close()
	nv.primary = nil
	return true
}

// reconcile starts or stops the replication primary to match the record.
func (nv *nodeVolume) reconcile() {
	r := nv.rec.Load()
	if r == nil || nv.witness {
		return
	}
	self := nv.m.self()
	nv.mu.Lock()
	defer nv.mu.Unlock()
	nv.diskEvent(r)
	if nv.primary != nil && (r.Primary != self || r.Epoch != nv.primaryEpoch) {
		nv.m.log.Warn("no longer primary at this epoch; stopping replication", "volume", nv.entry.Name, "epoch", r.Epoch, "primary", r.Primary)
		nv.primary.Close()
		nv.primary = nil
	}
	if r.Primary != self {
		nv.forgetActivity(r)
		return
	}
	if nv.m.st.Fence.Fenced() {
		return // self-fenced: serve nothing until quorum is back
	}
	meta := nv.m.meta()
	if meta == nil {
		return
	}
	if nv.primary != nil && !nv.restartDiskless() {
		if ms, err := meta.LocalState(); err == nil {
			nv.primary.SetResyncRate(nv.m.resyncRate(ms))
			// For the connections it opens from now on (a reconnect).
			nv.primary.SetPlainStream(nv.m.plainStream(ms))
		}
		nv.realignIfDisagrees(r)
		return
	}
	ctx, cancel := context.WithTimeout(nv.m.ctx, 30*time.Second)
	defer cancel()
	// The local record may be stale (a node powered back on replays an old
	// epoch): serve only what a linearizable read confirms.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	fresh, err := nv.vols.Record(rctx, nv.entry.ShardID)
	rcancel()
	if err != nil {
		return // no quorum yet: nothing could be acknowledged anyway
	}
	if cur := nv.rec.Load(); cur == nil || cur.Applied <= fresh.Applied {
		nv.rec.Store(fresh)
	}
	if fresh.Primary != self || fresh.Epoch != r.Epoch {
		return
	}
	// Which peers are in sync comes from the confirmed record too: a stale
	// one (a fence committed while this node was down or frozen) would
	// have the primary link a peer the record says is Outdated, and
	// neither side would ever resync it (the runner's seed 1014).
	r = fresh
	if err := nv.store.SetEpoch(ctx, r.Epoch); err != nil {
		nv.m.log.Error("cannot record the epoch; not serving as primary", "volume", nv.entry.Name, "epoch", r.Epoch, "err", err)
		return
	}
	ms, err := meta.LocalState()
	if err != nil {
		nv.m.log.Error("metadata unavailable; not serving as primary", "volume", nv.entry.Name, "err", err)
		return
	}
	var peers []replication.PeerConfig
	for slot, name := range nv.peers {
		pc := replication.PeerConfig{Name: name, Slot: slot}
		if n, ok := ms.Nodes[name]; ok {
			pc.Addr = n.ReplicationAddr
		}
		if pc.Addr == "" {
			// Right after a restart the local metadata may not have
			// replayed yet; a peer without an address would be fenced
			// off for nothing. The next reconcile tries again.
			nv.m.log.Info("replication address of a peer not known yet; waiting for the metadata", "volume", nv.entry.Name, "peer", name)
			return
		}
		if rr, ok := r.Replicas[name]; ok {
			pc.InSync = rr.State == consensus.UpToDate || rr.State == consensus.SyncSource
			pc.Full = rr.State == consensus.Failed
			pc.Reconcile = rr.Reconcile
		}
		if !pc.InSync && outOfSyncBeforeEpoch(r, name) {
			// What this peer missed under an earlier primary is in that
			// primary's bitmap, not in ours: resync it in full (found by
			// the fault-schedule runner, package chaos).
			if err := nv.store.MarkDirty(ctx, slot, 0, nv.store.Size()); err != nil {
				nv.m.log.Error("cannot mark a full resync for a peer outdated under an earlier primary; not serving as primary", "volume", nv.entry.Name, "peer", name, "err", err)
				return
			}
			nv.m.log.Warn("peer was out of sync before this epoch; its resync will be full", "volume", nv.entry.Name, "peer", name, "epoch", r.Epoch)
		}
		peers = append(peers, pc)
	}
	// A primary whose own replica the record has Failed (its disk was
	// detached) or SyncTarget (a re-attach was cut short) serves diskless
	// through its peers: its disk holds nothing to rely on (I3).
	diskless, cause := false, ""
	if own, ok := r.Replicas[self]; ok && own.State != consensus.UpToDate && own.State != consensus.SyncSource {
		diskless, cause = true, disklessCause(r)
	}
	p, err := replication.NewPrimary(ctx, replication.Config{
		Volume: nv.entry.Name, VolumeID: volumeIDHex(nv.store), Node: self, Epoch: r.Epoch,
		Local: nv.store, Peers: peers, Dial: nv.m.dial, Fencer: &volumeFencer{vols: nv.vols, shard: nv.entry.ShardID},
		Log: nv.m.log, ResyncRate: nv.m.resyncRate(ms), PlainStream: nv.m.plainStream(ms), ActivityLog: true, ActivitySlot: nv.activitySlot(),
		Diskless: diskless, DisklessCause: cause,
	})
	if err != nil {
		nv.m.log.Error("cannot start replication", "volume", nv.entry.Name, "err", err)
		return
	}
	nv.primary, nv.primaryEpoch = p, r.Epoch
	nv.m.log.Info("serving as primary", "volume", nv.entry.Name, "epoch", r.Epoch, "local_disk", p.Local().Describe())
	var reconcile []string
	for name, rr := range r.Replicas {
		if name != self && rr.Reconcile {
			reconcile = append(reconcile, name)
		}
	}
	if len(reconcile) > 0 {
		go nv.reconcilePeers(p, r.Epoch, reconcile)
	}
}

// realignIfDisagrees starts a Realign of the running primary when the
// record names a peer that the primary links in sync neither UpToDate nor
// SyncSource: a fence proposed before a restart of this node committed
// after the new primary linked the peer (see replication.Primary.Realign).
// The record here is the local copy, which may lag behind a resync this
// primary just finished; Realign confirms with a linearizable read before
// it fences anything. nv.mu held.
func (nv *nodeVolume) realignIfDisagrees(r *consensus.VolumeRecord) {
	if r.Epoch != nv.primaryEpoch || !linksDisagree(nv.primary.Status(), r) || !nv.realigning.CompareAndSwap(false, true) {
		return
	}
	p, shard, self := nv.primary, nv.entry.ShardID, nv.m.self()
	go func() {
		defer nv.realigning.Store(false)
		ctx, cancel := context.WithTimeout(nv.m.ctx, 5*time.Second)
		defer cancel()
		fenced, err := p.Realign(ctx, func(ctx context.Context) (uint64, map[string]consensus.ReplicaState, error) {
			rec, err := nv.vols.Record(ctx, shard)
			if err != nil {
				return 0, nil, err
			}
			states := make(map[string]consensus.ReplicaState, len(rec.Replicas))
			for n, rr := range rec.Replicas {
				states[n] = rr.State
			}
			return rec.Epoch, states, nil
		})
		if err != nil {
			nv.m.log.Info("record and replication links disagree; will check again", "volume", nv.entry.Name, "err", err)
			return
		}
		for _, peer := range fenced {
			nv.m.log.Warn("peer linked in sync but recorded otherwise (a fence committed late); fenced off again for a resync", "volume", nv.entry.Name, "peer", peer)
			if nv.m.st.Events != nil {
				nv.m.st.Events(ctx, consensus.Event{Kind: "replica-realigned", Node: self, Detail: fmt.Sprintf(
					"volume %s: %s was linked in sync while the record named it out of sync (a fence committed late, e.g. one proposed before %s restarted); it is fenced off again and resynced", nv.entry.Name, peer, self)})
			}
		}
	}()
}

// linksDisagree reports whether a peer the primary links in sync is
// recorded neither UpToDate nor SyncSource.
func linksDisagree(links []replication.PeerStatus, r *consensus.VolumeRecord) bool {
	for _, l := range links {
		if l.State != "in-sync" {
			continue
		}
		if rr, ok := r.Replicas[l.Name]; ok && rr.State != consensus.UpToDate && rr.State != consensus.SyncSource {
			return true
		}
	}
	return false
}

// diskEvent records a cluster event when this node's replica becomes
// Failed (its disk detached after an I/O error) or UpToDate again after
// that; nv.mu held.
func (nv *nodeVolume) diskEvent(r *consensus.VolumeRecord) {
	self := nv.m.self()
	own, ok := r.Replicas[self]
	if !ok {
		return
	}
	prev := nv.ownState
	nv.ownState = own.State
	if prev == "" || prev == own.State || nv.m.st.Events == nil {
		return
	}
	var e consensus.Event
	switch {
	case own.State == consensus.Failed:
		e = consensus.Event{Kind: "disk-detached", Node: self, Detail: fmt.Sprintf("volume %s: %s's disk is detached (Failed); it serves diskless through its peers: %s", nv.entry.Name, self, disklessCause(r))}
	case own.State == consensus.UpToDate && (prev == consensus.Failed || prev == consensus.SyncTarget) && r.Primary == self:
		e = consensus.Event{Kind: "disk-reattached", Node: self, Detail: fmt.Sprintf("volume %s: %s's disk is re-attached and UpToDate", nv.entry.Name, self)}
	default:
		return
	}
	go nv.m.st.Events(nv.m.ctx, e)
}

// outOfSyncBeforeEpoch reports whether peer, not in sync, has been so since
// before the record's epoch: the primary of an earlier epoch fenced it off
// and kept what it missed in its own bitmap, which the primary of this
// epoch does not have. Every transition is recorded with the epoch it
// happened at, so a peer with none at this epoch (neither its own state
// change nor being deposed by the promotion or handover that began it) was
// already out of sync when the epoch began. With the history trimmed the
// answer errs towards true, which costs a full resync, never a lost write.
func outOfSyncBeforeEpoch(r *consensus.VolumeRecord, peer string) bool {
	if r.Epoch <= 1 {
		return false // the first primary's bitmap has seen every write
	}
	for _, ev := range r.History {
		if ev.Epoch == r.Epoch && (strings.HasPrefix(ev.What, peer+" ") || strings.HasSuffix(ev.What, "(was "+peer+")")) {
			return false
		}
	}
	return true
}

// reconcilePeers runs after a promotion: secondaries may hold writes the
// old primary never got acknowledged, in places nobody recorded. A full
// online verify with repair against each of them finds and overwrites those
// blocks; the shard's Reconcile flag is cleared afterwards.
func (nv *nodeVolume) reconcilePeers(p *replication.Primary, epoch uint64, peers []string) {
	ctx, cancel := context.WithCancel(nv.m.ctx)
	defer cancel()
	for _, peer := range peers {
		for attempt := 0; ; attempt++ {
			select {
			case <-nv.stop:
				return
			case <-time.After(time.Duration(min(attempt, 10)) * time.Second):
			}
			nv.mu.Lock()
			current := nv.primary == p
			nv.mu.Unlock()
			if !current {
				return
			}
			linked := false
			for _, ps := range p.Status() {
				linked = linked || (ps.Name == peer && ps.State == "in-sync")
			}
			if !linked {
				continue // resync first, or wait for the peer to come back
			}
			res, err := nv.verify(ctx, true, []string{peer})
			if err != nil {
				nv.m.log.Info("reconcile after promotion: retrying", "volume", nv.entry.Name, "peer", peer, "err", err)
				continue
			}
			p.Reconciled(peer)
			if _, err := nv.vols.SetReplicaState(ctx, nv.entry.ShardID, epoch, peer, consensus.UpToDate, "reconciled after promotion"); err != nil {
				nv.m.log.Info("reconcile after promotion: cannot commit", "volume", nv.entry.Name, "peer", peer, "err", err)
				continue
			}
			nv.m.log.Info("reconciled after promotion", "volume", nv.entry.Name, "peer", peer, "checked", res.CheckedBytes, "repaired", res.RepairedBytes)
			break
		}
	}
}

// forgetActivity clears the activity log of a secondary once it is UpToDate
// again: the regions it handed over at reconnect have been resynced.
func (nv *nodeVolume) forgetActivity(r *consensus.VolumeRecord) {
	self, ok := r.Replicas[nv.m.self()]
	slot := nv.activitySlot()
	if !ok || self.State != consensus.UpToDate || nv.store.DirtyBytes(slot) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(nv.m.ctx, 10*time.Second)
	defer cancel()
	if err := nv.store.ClearDirty(ctx, slot, 0, nv.store.Size()); err == nil {
		_ = nv.store.Flush(ctx)
	}
}

// resyncRate reads the cluster setting "resync.rate" in bytes per second,
// 0 for unlimited. A stored value that does not parse (set by an older
// version that did not check) reads as the default, with a warning logged
// once per bad value.
func (m *Manager) resyncRate(ms *consensus.MetaState) int64 {
	raw := ms.Config[settings.KeyResyncRate] // "" when unset: the default
	m.warnMu.Lock()
	defer m.warnMu.Unlock()
	if m.rate.valid && m.rate.raw == raw {
		return m.rate.bps
	}
	rate, err := settings.Rate(ms.Config, settings.KeyResyncRate)
	if err != nil && m.warnedRate != raw {
		m.warnedRate = raw
		m.log.Warn("ignoring a bad cluster setting; fix it with 'tandem cluster config set'", "key", settings.KeyResyncRate, "value", raw, "err", err)
	}
	m.rate.valid, m.rate.raw, m.rate.bps = true, raw, rate
	return rate
}

// plainStream reads the cluster setting "replication.data_stream": whether
// this node asks its peers (as a primary) and agrees (as a secondary) to
// carry replication frames unencrypted after the TLS handshake and hello.
// Anything but a valid "plain" is TLS; a stored value that does not parse
// is warned about once per bad value. Cached as resyncRate is: every
// reconcile of every volume asks.
func (m *Manager) plainStream(ms *consensus.MetaState) bool {
	raw := ms.Config[settings.KeyDataStream] // "" when unset: the default, tls
	m.warnMu.Lock()
	defer m.warnMu.Unlock()
	if m.stream.valid && m.stream.raw == raw {
		return m.stream.plain
	}
	v, err := settings.String(ms.Config, settings.KeyDataStream)
	if err != nil && m.warnedStream != raw {
		m.warnedStream = raw
		m.log.Warn("ignoring a bad cluster setting; fix it with 'tandem cluster config set'", "key", settings.KeyDataStream, "value", raw, "err", err)
	}
	m.stream.valid, m.stream.raw, m.stream.plain = true, raw, v == settings.DataStreamPlain
	return m.stream.plain
}

// plainStreamNow is plainStream on this replica's metadata, or false
// (TLS) while there is none to read.
func (m *Manager) plainStreamNow() bool {
	meta := m.meta()
	if meta == nil {
		return false
	}
	ms, err := meta.LocalState()
	if err != nil {
		return false
	}
	return m.plainStream(ms)
}

func (m *Manager) dial(ctx context.Context, addr string) (net.Conn, error) {
	cl, ok := m.st.Cluster()
	if !ok {
		return nil, errors.New("node is not in a cluster")
	}
	cfg, err := cl.ClientTLS()
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("replication address %q: %w", addr, err)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // dial and handshake
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	// The cork lets the primary send a batch of TLS records in one write,
	// and a batch of frames once a plain data stream has left TLS (the
	// primary writes to the CorkConn directly then).
	c := tls.Client(replication.NewCorkConn(raw), cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return c, nil
}

func volumeIDHex(s *blockstore.LocalVolume) string {
	id := s.Meta().VolumeID
	return hex.EncodeToString(id[:])
}

// volumeFencer commits replica state changes through the volume's shard.
type volumeFencer struct {
	vols  Shard
	shard uint64
}

func (f *volumeFencer) Outdate(ctx context.Context, epoch uint64, peer, reason string) error {
	_, err := f.vols.Outdate(ctx, f.shard, epoch, peer, reason)
	return err
}

func (f *volumeFencer) SetState(ctx context.Context, epoch uint64, peer string, s consensus.ReplicaState, reason string) error {
	_, err := f.vols.SetReplicaState(ctx, f.shard, epoch, peer, s, reason)
	return err
}

func (f *volumeFencer) Detach(ctx context.Context, epoch uint64, reason string) error {
	_, err := f.vols.Detach(ctx, f.shard, epoch, reason)
	if errors.Is(err, consensus.ErrNotUpToDate) {
		return fmt.Errorf("%w: %w", replication.ErrNoUpToDatePeer, err)
	}
	return err
}

// disklessCause is why the record has the primary's disk detached: the
// reason of the last detach event, for status after a restart.
func disklessCause(r *consensus.VolumeRecord) string {
	for i := len(r.History) - 1; i >= 0; i-- {
		if h := r.History[i]; strings.HasPrefix(h.What, r.Primary+" ") && strings.Contains(h.What, "-> "+string(consensus.Failed)) {
			return strings.TrimPrefix(h.Reason, "detached after I/O error: ")
		}
	}
	own := r.Replicas[r.Primary]
	return fmt.Sprintf("the volume's record has this replica %s", own.State)
}

// openVolumes is a copy of the volumes open here, to work on without
// holding m.mu.
func (m *Manager) openVolumes() []*nodeVolume {
	m.mu.Lock()
	defer m.mu.Unlock()
	vols := make([]*nodeVolume, 0, len(m.vols))
	for _, nv := range m.vols {
		vols = append(vols, nv)
	}
	return vols
}

// WakeShardsOf makes this node's replicas of the volume shards that node
// is a member of (a replica or the witness) and, as far as this node
// knows, leads (or whose leader it does not know) active again, so that
// they elect a new leader now; it returns how many it woke.
func (m *Manager) WakeShardsOf(node string) int {
	var replicaID uint64
	if meta := m.meta(); meta != nil {
		if ms, err := meta.LocalState(); err == nil {
			if rec, ok := ms.Nodes[node]; ok {
				replicaID = rec.ReplicaID
			}
		}
	}
	vols := m.openVolumes()
	n := 0
	for _, nv := range vols {
		if nv.entry.ShardID == 0 || !(slices.Contains(nv.entry.Replicas, node) || nv.entry.Witness == node) {
			continue
		}
		if replicaID == 0 {
			nv.vols.Wake(nv.entry.ShardID) // unknown node: wake them all
			n++
		} else if nv.vols.WakeIfLedBy(nv.entry.ShardID, replicaID) {
			n++
		}
	}
	return n
}

// Primaries counts the volumes served here as primary.
func (m *Manager) Primaries() int {
	vols := m.openVolumes()
	n := 0
	for _, nv := range vols {
		nv.mu.Lock()
		if nv.primary != nil {
			n++
		}
		nv.mu.Unlock()
	}
	return n
}

// FreezeAll stops every primary here for good: nothing more is
// acknowledged; reconcile starts them again once the node is unfrozen.
func (m *Manager) FreezeAll(cause error) (retired int) {
	vols := m.openVolumes()
	for _, nv := range vols {
		nv.mu.Lock()
		if p := nv.primary; p != nil {
			p.Retire(cause)
			p.Close()
			nv.primary = nil
			retired++
			m.log.Warn("volume frozen", "volume", nv.entry.Name, "cause", cause)
		}
		nv.mu.Unlock()
	}
	return retired + m.closeAllRBD(cause.Error())
}

// Target finds the secondary replica a primary replicates to, once per
// replication connection: the data stream this node agrees to is the
// setting in force when the connection opens.
func (m *Manager) Target(name string) (*replication.Target, error) {
	nv := m.get(name)
	if nv == nil || nv.store == nil {
		return nil, fmt.Errorf("%w: %s has no replica of %q", replication.ErrUnknownVolume, m.self(), name)
	}
	return &replication.Target{Name: name, Store: nv.store, VolumeID: volumeIDHex(nv.store), Authority: nv, PersistEpoch: nv.store.SetEpoch,
		Activity:    func() ([][2]int64, bool) { return replication.ActivityRanges(nv.store, nv.activitySlot()) },
		PlainStream: m.plainStreamNow()}, nil
}

// exportRefresh bounds the shard read an NBD connect may wait for.
const exportRefresh = 2 * time.Second

// Export finds the NBD export of a volume this node is primary of, or the
// migration target of (nbd.Server's lookup; ctx is the connection's).
func (m *Manager) Export(ctx context.Context, name string) (*nbd.Export, error) {
	nv := m.get(name)
	if nv == nil {
		if ex, ok, err := m.rbdExport(ctx, name); ok {
			return ex, err
		}
		return nil, fmt.Errorf("%w: node %s holds no volume %q", nbd.ErrUnknownExport, m.self(), name)
	}
	nv.mu.Lock()
	p := nv.primary
	nv.mu.Unlock()
	var vol blockstore.Volume = p
	var done <-chan struct{}
	readOnly := false
	if p != nil {
		select {
		case <-p.Done():
			// Retired or deposed, not replaced yet: a client bound to it
			// would get nothing but errors.
			return nil, fmt.Errorf("node %s is not serving volume %s as primary now", m.self(), name)
		default:
		}
		done = p.Done()
	}
	if p == nil {
		r := nv.rec.Load()
		if nv.store != nil && (r == nil || r.MigrationTarget != m.self()) {
			// The source commits the migration window (allow-dual) and
			// starts the migration at once: this replica may not have
			// applied the record yet. Ask the shard before refusing.
			rctx, cancel := context.WithTimeout(ctx, exportRefresh)
			if _, err := nv.Refresh(rctx); err != nil {
				m.log.Info("cannot refresh the volume's record for an NBD connect", "volume", name, "err", err)
			}
			cancel()
			r = nv.rec.Load()
		}
		if r == nil {
			return nil, fmt.Errorf("volume %s is not ready on %s yet", name, m.self())
		}
		if r.MigrationTarget != m.self() || nv.store == nil {
			return nil, fmt.Errorf("node %s is not the primary of volume %s: %s is (epoch %d)", m.self(), name, r.Primary, r.Epoch)
		}
		// The open migration window (I5): the first write takes over, but
		// only from the unix socket (this node's own QEMU, the migrating
		// VM). A TLS client of the TCP export may read the window, never
		// hand the volume over.
		_, remote := nbd.ClientTLS(ctx)
		vol = migrationVolume{nv: nv, remote: remote}
		readOnly = remote
	}
	return &nbd.Export{Name: name, Description: "tandem volume " + name, Volume: vol, MultiConn: true, ReadOnly: readOnly, Done: done,
		Attach: func() func() {
			nv.attached.Add(1)
			return func() { nv.attached.Add(-1) }
		}}, nil
}

// connections counts NBD clients attached to a volume's export here.
func (m *Manager) connections(name string) int {
	nv := m.get(name)
	if nv == nil {
		return 0
	}
	return int(nv.attached.Load())
}
