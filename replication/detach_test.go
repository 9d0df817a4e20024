package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// faultyDisk is the real file-backed local replica (blockstore.LocalVolume)
// with a switch that makes its writes, flushes or reads fail with EIO, as
// a failing disk under it would: it fakes the disk fault, not the primary
// under test. Bitmap writes fail with the data writes.
type faultyDisk struct {
	*blockstore.LocalVolume
	failWrites, failFlush, failReads atomic.Bool
	// writesWhileFailing counts writes that reached it while failing.
	writesWhileFailing atomic.Int64
}

func eio(op string) error { return fmt.Errorf("injected %s fault: %w", op, syscall.EIO) }

func (d *faultyDisk) WriteAt(ctx context.Context, b []byte, off int64, f blockstore.WriteFlags) (int, error) {
	if d.failWrites.Load() {
		d.writesWhileFailing.Add(1)
		return 0, eio("write")
	}
	return d.LocalVolume.WriteAt(ctx, b, off, f)
}

func (d *faultyDisk) WriteZeroes(ctx context.Context, off, n int64, f blockstore.WriteFlags) error {
	if d.failWrites.Load() {
		return eio("write zeroes")
	}
	return d.LocalVolume.WriteZeroes(ctx, off, n, f)
}

func (d *faultyDisk) Trim(ctx context.Context, off, n int64) error {
	if d.failWrites.Load() {
		return eio("trim")
	}
	return d.LocalVolume.Trim(ctx, off, n)
}

func (d *faultyDisk) Flush(ctx context.Context) error {
	if d.failFlush.Load() {
		return eio("flush")
	}
	return d.LocalVolume.Flush(ctx)
}

func (d *faultyDisk) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	if d.failReads.Load() {
		return 0, eio("read")
	}
	return d.LocalVolume.ReadAt(ctx, b, off)
}

func (d *faultyDisk) MarkDirty(ctx context.Context, slot int, off, n int64) error {
	if d.failWrites.Load() {
		return eio("bitmap write")
	}
	return d.LocalVolume.MarkDirty(ctx, slot, off, n)
}

// SyncAhead is not passed through: it would bypass the flush switch.
func (d *faultyDisk) SyncAhead(context.Context) bool { return false }

// newFaultyDisk makes a replica file with one bitmap slot per peer plus the
// activity log's.
func newFaultyDisk(t *testing.T, peers int) *faultyDisk {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "vol.vol")
	if err := blockstore.Create(path, volSize, blockstore.CreateOptions{MaxPeers: peers + 1, DiskState: blockstore.DiskUpToDate}); err != nil {
		t.Fatal(err)
	}
	v, err := blockstore.Open(path, blockstore.OpenOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	for slot := range peers + 1 {
		if err := v.AssignPeer(ctx, slot, fmt.Sprintf("slot%d", slot)); err != nil {
			t.Fatal(err)
		}
		if err := v.ClearDirty(ctx, slot, 0, volSize); err != nil {
			t.Fatal(err)
		}
	}
	return &faultyDisk{LocalVolume: v}
}

// diskRig is a primary on a faulty file-backed disk with in-memory peers.
type diskRig struct {
	*rig
	disk *faultyDisk
	// model is what the acknowledged writes made of the volume.
	model []byte
}

func newDiskRig(t *testing.T, peers int, opts ...func(*PeerConfig)) *diskRig {
	t.Helper()
	r := &rig{auth: &authority{v: View{Epoch: 1, Primary: "n1"}}, fence: &fencer{epoch: 1, states: map[string]ReplicaState{}, primary: "n1"}}
	r.ctx, r.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(r.cancel)
	disk := newFaultyDisk(t, peers)
	var pcs []PeerConfig
	for i := range peers {
		name := fmt.Sprintf("n%d", i+2)
		s := startSecondary(t, name, newMemStore(volSize), r.auth, "")
		r.secs = append(r.secs, s)
		pc := PeerConfig{Name: name, Addr: s.ln.Addr().String(), Slot: i, InSync: true}
		for _, o := range opts {
			o(&pc)
		}
		pcs = append(pcs, pc)
		r.fence.peers = append(r.fence.peers, name)
	}
	p, err := NewPrimary(r.ctx, Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: disk, Peers: pcs,
		Dial: dialAs("n1"), Fencer: r.fence, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AckTimeout: time.Second, ReconnectInterval: 50 * time.Millisecond, ActivityLog: true, ActivitySlot: peers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r.p = p
	return &diskRig{rig: r, disk: disk, model: make([]byte, volSize)}
}

// write writes and, when acknowledged, applies it to the model.
func (d *diskRig) write(ctx context.Context, b []byte, off int64, f blockstore.WriteFlags) error {
	if _, err := d.p.WriteAt(ctx, b, off, f); err != nil {
		return err
	}
	copy(d.model[off:], b)
	return nil
}

// writeSeq issues n acknowledged writes (some overlapping) with a flush
// every few; any failure fails the test.
func (d *diskRig) writeSeq(t *testing.T, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range n {
		off := rng.Int64N(volSize/4096-16) * 4096
		if i%4 == 0 {
			off = 1 << 20 // hot spot
		}
		b := make([]byte, (1+rng.IntN(16))*4096)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := d.write(d.ctx, b, off, 0); err != nil {
			t.Fatalf("write %d (%d+%d): %v", i, off, len(b), err)
		}
		if i%7 == 6 {
			if err := d.p.Flush(d.ctx); err != nil {
				t.Fatalf("flush after write %d: %v", i, err)
			}
		}
	}
	if err := d.p.Flush(d.ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// requirePeerHoldsModel: no acknowledged write is lost on peer i.
func (d *diskRig) requirePeerHoldsModel(t *testing.T, i int) {
	t.Helper()
	got := d.secs[i].store.snapshot()
	if !bytes.Equal(got, d.model) {
		for off := range got {
			if got[off] != d.model[off] {
				t.Fatalf("peer %s lost acknowledged data: first difference at byte %d", d.secs[i].name, off)
			}
		}
	}
}

func (d *diskRig) requireReadsModel(t *testing.T) {
	t.Helper()
	buf := make([]byte, volSize)
	if _, err := d.p.ReadAt(d.ctx, buf, 0); err != nil {
		t.Fatalf("read the volume: %v", err)
	}
	if !bytes.Equal(buf, d.model) {
		t.Fatal("a read through the primary does not return the acknowledged data")
	}
}

// TestPrimaryDiskEIOWritesContinueThroughPeer: EIO on every local write
// detaches the disk (Failed in the shard) and writes keep being
// acknowledged through the in-sync peer, which holds every one of them;
// reads come from the peer, not from the stale local disk.
func TestPrimaryDiskEIOWritesContinueThroughPeer(t *testing.T) {
	d := newDiskRig(t, 1)
	d.writeSeq(t, 1, 30)
	d.disk.failWrites.Store(true)
	d.disk.failFlush.Store(true)
	d.writeSeq(t, 2, 60)
	// FUA, trim and zeroes go the same way.
	if err := d.write(d.ctx, bytes.Repeat([]byte{0xab}, 8192), 4096, blockstore.FUA); err != nil {
		t.Fatalf("FUA write after the fault: %v", err)
	}
	if err := d.p.WriteZeroes(d.ctx, 1<<20, 8192, 0); err != nil {
		t.Fatalf("write zeroes after the fault: %v", err)
	}
	clear(d.model[1<<20 : 1<<20+8192])
	d.requirePeerHoldsModel(t, 0)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("the shard has the primary's replica %q, want Failed (log %v)", got, d.fence.log)
	}
	if got := d.fence.state("n2"); got != "" {
		t.Fatalf("the peer was committed %s; it must stay UpToDate", got)
	}
	if ls := d.p.Local(); ls.State != "Diskless" || ls.Cause == "" {
		t.Fatalf("local status %+v", ls)
	}
	t.Logf("status: %s", d.p.Local().Describe())
	// The first fault may be the activity log's bitmap write: at most
	// one data write reaches the failing disk.
	if n := d.disk.writesWhileFailing.Load(); n > 1 {
		t.Fatalf("%d writes reached the failed disk; after the one that failed it must get none", n)
	}
	// The disk's content is stale now; reads must come from the peer.
	d.disk.failWrites.Store(false)
	d.disk.failFlush.Store(false)
	local := make([]byte, volSize)
	if _, err := d.disk.LocalVolume.ReadAt(d.ctx, local, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(local, d.model) {
		t.Fatal("the detached disk holds the model; the test cannot tell where reads come from")
	}
	d.requireReadsModel(t)
}

// TestPrimaryDiskEIOWithoutInSyncPeerFails: with no in-sync peer a local
// EIO fails the write, which is never acknowledged, and nothing is
// detached; and a diskless primary whose last in-sync peer goes fails
// every request with EIO.
func TestPrimaryDiskEIOWithoutInSyncPeerFails(t *testing.T) {
	t.Run("no peer in sync", func(t *testing.T) {
		d := newDiskRig(t, 1)
		d.writeSeq(t, 3, 10)
		d.secs[0].kill()
		d.writeSeq(t, 4, 10) // the peer is fenced off (Outdated) first
		if got := d.fence.state("n2"); got != Outdated {
			t.Fatalf("peer is %q, want Outdated", got)
		}
		d.disk.failWrites.Store(true)
		_, err := d.p.WriteAt(d.ctx, bytes.Repeat([]byte{1}, 4096), 0, 0)
		if err == nil || !errors.Is(err, syscall.EIO) {
			t.Fatalf("write on a failed disk with no in-sync peer: %v, want EIO", err)
		}
		if got := d.fence.state("n1"); got != "" {
			t.Fatalf("the primary's replica was committed %s with no peer to serve from", got)
		}
		if ls := d.p.Local(); ls.State != "UpToDate" {
			t.Fatalf("local status %+v", ls)
		}
	})
	t.Run("diskless loses its peer", func(t *testing.T) {
		d := newDiskRig(t, 1)
		d.disk.failWrites.Store(true)
		d.writeSeq(t, 5, 10)
		if got := d.fence.state("n1"); got != Failed {
			t.Fatalf("primary's replica %q, want Failed", got)
		}
		d.secs[0].kill()
		for i := range 5 {
			b := bytes.Repeat([]byte{byte(i + 1)}, 4096)
			if _, err := d.p.WriteAt(d.ctx, b, int64(i)*4096, 0); err == nil {
				t.Fatal("a diskless primary acknowledged a write with no in-sync peer")
			} else if !errors.Is(err, syscall.EIO) {
				t.Fatalf("write: %v, want EIO", err)
			}
		}
		if got := d.fence.state("n2"); got == Outdated {
			t.Fatal("the only replica holding the data was outdated")
		}
		if _, err := d.p.ReadAt(d.ctx, make([]byte, 4096), 0); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read: %v, want EIO", err)
		}
		d.requirePeerHoldsModel(t, 0)
	})
}

// TestPrimaryFlushEIODetaches: a failed flush (fdatasync) on the local
// disk detaches it; the flush is acknowledged once the peer has the
// writes durably.
func TestPrimaryFlushEIODetaches(t *testing.T) {
	d := newDiskRig(t, 1)
	d.writeSeq(t, 6, 10)
	d.disk.failFlush.Store(true)
	if err := d.write(d.ctx, bytes.Repeat([]byte{7}, 4096), 0, 0); err != nil {
		t.Fatal(err)
	}
	flushes := d.secs[0].store.flushs.Load()
	if err := d.p.Flush(d.ctx); err != nil {
		t.Fatalf("flush with a failing local sync: %v", err)
	}
	if d.secs[0].store.flushs.Load() == flushes {
		t.Fatal("the flush was acknowledged without the peer flushing")
	}
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	d.writeSeq(t, 7, 20)
	d.requirePeerHoldsModel(t, 0)
}

// TestPrimaryReadErrorServedFromPeer: a local read error detaches the
// disk and the read is served by the peer (DRBD reads from the peer).
func TestPrimaryReadErrorServedFromPeer(t *testing.T) {
	d := newDiskRig(t, 1)
	d.writeSeq(t, 8, 30)
	d.disk.failReads.Store(true)
	d.requireReadsModel(t)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	d.writeSeq(t, 9, 10)
	d.requirePeerHoldsModel(t, 0)
	d.requireReadsModel(t)
}

// TestReattachAfterDiskFault: once the disk works again, Reattach copies
// the peer's data in while writes continue, commits the local replica
// UpToDate, and reads are local again.
func TestReattachAfterDiskFault(t *testing.T) {
	d := newDiskRig(t, 1)
	d.writeSeq(t, 10, 20)
	d.disk.failWrites.Store(true)
	d.writeSeq(t, 11, 40)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	d.disk.failWrites.Store(false)
	done := make(chan error, 1)
	go func() { done <- d.p.Reattach(d.ctx) }()
	// Writes continue during the copy.
	var reattachErr error
	for i := uint64(0); ; i++ {
		select {
		case reattachErr = <-done:
		default:
			d.writeSeq(t, 100+i, 4)
			continue
		}
		break
	}
	if reattachErr != nil {
		t.Fatalf("reattach: %v", reattachErr)
	}
	if got := d.fence.state("n1"); got != UpToDate {
		t.Fatalf("primary's replica %q after reattach, want UpToDate (log %v)", got, d.fence.log)
	}
	if ls := d.p.Local(); ls.State != "UpToDate" {
		t.Fatalf("local status %+v", ls)
	}
	d.writeSeq(t, 12, 20)
	local := make([]byte, volSize)
	if _, err := d.disk.LocalVolume.ReadAt(d.ctx, local, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(local, d.model) {
		t.Fatal("the re-attached disk does not hold the acknowledged data")
	}
	d.requirePeerHoldsModel(t, 0)
	if err := d.p.Reattach(d.ctx); !errors.Is(err, ErrNotDetached) {
		t.Fatalf("reattach of an attached disk: %v", err)
	}
}

// TestDetachWithTwoPeersAndAResync: with two peers, a write on a diskless
// primary waits for both; a peer that was resyncing from the disk when it
// failed is fenced (never made UpToDate from a stale disk) and gets no
// resync while the primary is diskless; after the re-attach it is resynced
// in full and every replica holds the acknowledged data.
func TestDetachWithTwoPeersAndAResync(t *testing.T) {
	d := newDiskRig(t, 2)
	d.writeSeq(t, 20, 20)
	lost := d.secs[1]
	lostAddr := lost.ln.Addr().String()
	lost.kill()
	d.writeSeq(t, 21, 20) // n3 is fenced off: Outdated
	if got := d.fence.state("n3"); got != Outdated {
		t.Fatalf("n3 is %q, want Outdated", got)
	}
	// n3 returns and resyncs slowly; the disk fails meanwhile.
	d.p.SetResyncRate(64 << 10)
	back := startSecondary(t, "n3", lost.store, d.auth, lostAddr)
	d.secs[1] = back
	deadline := time.Now().Add(30 * time.Second)
	for d.fence.state("n3") != SyncTarget {
		if time.Now().After(deadline) {
			t.Fatalf("resync of n3 did not start: %v", d.fence.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.disk.failWrites.Store(true)
	d.disk.failFlush.Store(true)
	d.writeSeq(t, 22, 40)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	if got := d.fence.state("n3"); got != Inconsistent {
		t.Fatalf("n3, resyncing from the failed disk, is %q; want Inconsistent (log %v)", got, d.fence.log)
	}
	d.requirePeerHoldsModel(t, 0)
	time.Sleep(200 * time.Millisecond) // reconnect attempts happen meanwhile
	if got := d.fence.state("n3"); got != Inconsistent {
		t.Fatalf("n3 became %q while the primary is diskless", got)
	}
	// Re-attach, then n3's full resync.
	d.p.SetResyncRate(0)
	d.disk.failWrites.Store(false)
	d.disk.failFlush.Store(false)
	if err := d.p.Reattach(d.ctx); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for d.fence.state("n3") != UpToDate {
		if time.Now().After(deadline) {
			t.Fatalf("n3 not resynced after the re-attach: %v", d.fence.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.writeSeq(t, 23, 10)
	d.requirePeerHoldsModel(t, 0)
	d.requirePeerHoldsModel(t, 1)
}

// TestDisklessLosesOneOfTwoPeers: a diskless primary whose second in-sync
// peer is still there fences the lost one off (Outdated) and keeps
// acknowledging writes through the other, instead of stopping with the
// record naming UpToDate a replica that misses the writes in flight (the
// fault-schedule runner's seed 7025: after healing, the next primary
// linked both in sync, and they differed). The fenced peer is not resynced
// while the disk is detached; after the re-attach it is, in full.
func TestDisklessLosesOneOfTwoPeers(t *testing.T) {
	d := newDiskRig(t, 2)
	d.writeSeq(t, 30, 20)
	d.disk.failWrites.Store(true)
	d.disk.failFlush.Store(true)
	d.writeSeq(t, 31, 20)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	lost := d.secs[1]
	lostAddr := lost.ln.Addr().String()
	lost.kill()
	d.writeSeq(t, 32, 40) // fails if the primary stopped
	if got := d.fence.state("n3"); got != Outdated {
		t.Fatalf("n3, lost while the primary is diskless, is %q; want Outdated (log %v)", got, d.fence.log)
	}
	if got := d.fence.state("n2"); got != "" {
		t.Fatalf("n2 was committed %s; it must stay UpToDate", got)
	}
	if d.p.StoppedDiskless() {
		t.Fatal("the primary stopped though an in-sync peer remains")
	}
	d.requirePeerHoldsModel(t, 0)
	d.requireReadsModel(t)

	back := startSecondary(t, "n3", lost.store, d.auth, lostAddr)
	d.secs[1] = back
	time.Sleep(200 * time.Millisecond) // reconnect attempts happen meanwhile
	if got := d.fence.state("n3"); got != Outdated {
		t.Fatalf("n3 became %q while the primary is diskless", got)
	}
	d.disk.failWrites.Store(false)
	d.disk.failFlush.Store(false)
	if err := d.p.Reattach(d.ctx); err != nil {
		t.Fatal(err)
	}
	d.waitState(t, "n3", UpToDate, 30*time.Second)
	d.writeSeq(t, 33, 10)
	d.requirePeerHoldsModel(t, 0)
	d.requirePeerHoldsModel(t, 1)
}

// TestDisklessStopWaitsForFence: a diskless primary whose last in-sync
// peer fails while another peer's fence is still committing reports
// StoppedDiskless only once that fence has committed: a fresh primary
// started earlier would read a record naming both UpToDate and link them
// in sync, though only one has the writes in flight.
func TestDisklessStopWaitsForFence(t *testing.T) {
	d := newDiskRig(t, 2)
	d.disk.failWrites.Store(true)
	d.disk.failFlush.Store(true)
	d.writeSeq(t, 40, 10)
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	held := make(chan struct{})
	outdating := make(chan string, 4)
	d.fence.mu.Lock()
	d.fence.held, d.fence.outdating = held, outdating
	d.fence.mu.Unlock()
	d.secs[1].kill()
	// A write makes the primary notice; it waits (frozen) for the fence.
	wrote := make(chan error, 1)
	go func() {
		_, err := d.p.WriteAt(d.ctx, bytes.Repeat([]byte{9}, 4096), 0, 0)
		wrote <- err
	}()
	select {
	case peer := <-outdating:
		if peer != "n3" {
			t.Fatalf("outdating %s, want n3", peer)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("n3 was not fenced")
	}
	d.secs[0].kill()
	// The primary stops (its last in-sync peer is gone) while the fence
	// of n3 has not committed yet.
	deadline := time.Now().Add(20 * time.Second)
	for !errors.Is(d.p.deposedErr(), ErrDiskless) {
		if time.Now().After(deadline) {
			t.Fatalf("the primary did not stop after losing its last in-sync peer: %v", d.p.deposedErr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if d.p.StoppedDiskless() {
		t.Fatal("StoppedDiskless while n3's fence is still committing: a fresh primary would link n3 in sync")
	}
	close(held)
	// The write may have been confirmed by n2 before it was lost: then it
	// is acknowledged once n3 is Outdated, and n2 (UpToDate) holds it.
	if err := <-wrote; err == nil {
		got := d.secs[0].store.snapshot()[:4096]
		if !bytes.Equal(got, bytes.Repeat([]byte{9}, 4096)) {
			t.Fatal("a write was acknowledged that n2, the only UpToDate replica, does not hold")
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for !d.p.StoppedDiskless() {
		if time.Now().After(deadline) {
			t.Fatalf("not StoppedDiskless after n3's fence committed (log %v)", d.fence.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := d.fence.state("n3"); got != Outdated {
		t.Fatalf("n3 is %q, want Outdated", got)
	}
	if got := d.fence.state("n2"); got != "" {
		t.Fatalf("n2, the only replica with every write, was committed %s", got)
	}
}

// TestDisklessReadRetriedOnOtherPeer: a read a diskless primary sent to
// an in-sync peer that then fails is served by the other in-sync peer,
// not failed with EIO.
func TestDisklessReadRetriedOnOtherPeer(t *testing.T) {
	d := newDiskRig(t, 2)
	d.writeSeq(t, 50, 10)
	d.disk.failReads.Store(true)
	d.requireReadsModel(t) // detaches; reads come from n2, the first peer
	if got := d.fence.state("n1"); got != Failed {
		t.Fatalf("primary's replica %q, want Failed", got)
	}
	// n2 holds a write, so that a read of its range queues behind it.
	gate := make(chan struct{})
	d.secs[0].store.gate.Store(&gate)
	want := bytes.Repeat([]byte{0x5a}, 4096)
	wrote := make(chan error, 1)
	go func() { wrote <- d.write(d.ctx, want, 0, 0) }()
	read := make(chan error, 1)
	got := make([]byte, 4096)
	time.Sleep(50 * time.Millisecond)
	go func() {
		_, err := d.p.ReadAt(d.ctx, got, 0)
		read <- err
	}()
	time.Sleep(50 * time.Millisecond)
	killed := make(chan struct{})
	go func() { d.secs[0].kill(); close(killed) }()
	d.waitState(t, "n2", Outdated, 20*time.Second)
	close(gate)
	<-killed
	if err := <-wrote; err != nil {
		t.Fatalf("write (n3 holds it): %v", err)
	}
	if err := <-read; err != nil {
		t.Fatalf("read with n3 still in sync: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the read did not return the write it was ordered after")
	}
	d.requirePeerHoldsModel(t, 1)
}

// TestResyncOfPeerToReconcileIsFull: a peer the record has to be
// reconciled after a change of primary may hold what the old primary
// never got acknowledged, where this primary's bitmap says nothing. Fenced
// before it was reconciled, its resync copies everything (the
// fault-schedule runner's seed 7100: the bitmap resync made it UpToDate,
// which cleared the flag, and two ranges stayed different). Once
// reconciled (Reconciled), or after one full resync, its resyncs are
// incremental again.
func TestResyncOfPeerToReconcileIsFull(t *testing.T) {
	const stale = volSize - 4096 // writeSeq never writes the last block
	run := func(t *testing.T, reconciled bool) (*diskRig, int64) {
		d := newDiskRig(t, 2, func(pc *PeerConfig) { pc.Reconcile = pc.Name == "n3" })
		// The old primary's unacknowledged write, on n3 only.
		st := d.secs[1].store
		st.mu.Lock()
		copy(st.data[stale:], bytes.Repeat([]byte{0xee}, 4096))
		st.mu.Unlock()
		d.writeSeq(t, 60, 20)
		if reconciled {
			d.p.Reconciled("n3")
		}
		lost := d.secs[1]
		addr := lost.ln.Addr().String()
		lost.kill()
		d.writeSeq(t, 61, 10)
		if got := d.fence.state("n3"); got != Outdated {
			t.Fatalf("n3 is %q, want Outdated", got)
		}
		d.secs[1] = startSecondary(t, "n3", lost.store, d.auth, addr)
		d.waitState(t, "n3", UpToDate, 30*time.Second)
		var sent int64
		for _, pe := range d.p.peers {
			if pe.cfg.Name == "n3" {
				sent = pe.resyncSent.Load()
			}
		}
		return d, sent
	}
	t.Run("not reconciled yet", func(t *testing.T) {
		d, sent := run(t, false)
		if sent != volSize {
			t.Errorf("resync sent %d bytes, want the whole volume (%d)", sent, volSize)
		}
		d.requirePeerHoldsModel(t, 1)
		// A full resync reconciled it: the next one is incremental.
		lost := d.secs[1]
		addr := lost.ln.Addr().String()
		lost.kill()
		d.writeSeq(t, 62, 5)
		d.secs[1] = startSecondary(t, "n3", lost.store, d.auth, addr)
		d.waitState(t, "n3", UpToDate, 30*time.Second)
		d.requirePeerHoldsModel(t, 1)
		for _, pe := range d.p.peers {
			if pe.cfg.Name == "n3" && pe.resyncSent.Load()-sent >= volSize {
				t.Errorf("the resync after a full one sent %d bytes, want only the dirty set", pe.resyncSent.Load()-sent)
			}
		}
	})
	t.Run("reconciled", func(t *testing.T) {
		_, sent := run(t, true)
		if sent >= volSize {
			t.Errorf("resync of a reconciled peer sent %d bytes, want only its dirty set", sent)
		}
	})
}
