package replication

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// crashedPrimaryStore is a primary's store as a crash left it: writes in
// regions spread over the volume reached the local disk and the activity
// log (slot alSlot), and no peer.
func crashedPrimaryStore(t *testing.T, size int64, regions int) *memStore {
	t.Helper()
	s := newMemStore(size)
	ctx := t.Context()
	step := size / int64(regions) / s.gran * s.gran
	for i := range int64(regions) {
		off := i * step
		if _, err := s.WriteAt(ctx, bytes.Repeat([]byte{byte(i) | 1}, 4096), off, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkDirty(ctx, alSlot, off, 4096); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

const alSlot = 2

func waitIdentical(t *testing.T, a, b *memStore, what string) {
	t.Helper()
	// Generous: a bound for a hung replay, not a speed goal (the race
	// detector makes a 1500-region replay take tens of seconds).
	deadline := time.Now().Add(3 * time.Minute)
	for !bytes.Equal(a.snapshot(), b.snapshot()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: replicas still differ", what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestActivityReplayCoversMoreThanTheWireLimit: a primary restarted with
// more regions in its activity log than a HelloAck carries (1000) sends
// every one of them to its in-sync peer, not the first 1000.
func TestActivityReplayCoversMoreThanTheWireLimit(t *testing.T) {
	const size = 72 << 20
	const regions = 1100 // > maxActivityRanges
	local := crashedPrimaryStore(t, size, regions)
	auth := &authority{v: View{Epoch: 2, Primary: "n1"}}
	peer := startSecondary(t, "n2", newMemStore(size), auth, "")
	f := &fencer{epoch: 2, states: map[string]ReplicaState{}}
	p, err := NewPrimary(t.Context(), Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 2, Local: local,
		Peers: []PeerConfig{{Name: "n2", Addr: peer.ln.Addr().String(), Slot: 0, InSync: true}},
		Dial:  dialAs("n1"), Fencer: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ActivityLog: true, ActivitySlot: alSlot, ActivityExtent: local.gran, ActivityIdle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitIdentical(t, local, peer.store, "after the activity replay")
	// Replayed to the peer in sync: its bitmap is clear again, and the
	// log itself empties once the regions are idle.
	deadline := time.Now().Add(time.Minute)
	for local.DirtyBytes(0) != 0 || local.DirtyBytes(alSlot) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the replay: peer bitmap %d bytes, activity log %d bytes", local.DirtyBytes(0), local.DirtyBytes(alSlot))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestActivityReplayReachesPeersOutOfSync: regions in the activity log of
// a restarted primary reach a peer that is not in sync (and one in sync
// but unreachable at the restart) through its resync, so every replica
// converges.
func TestActivityReplayReachesPeersOutOfSync(t *testing.T) {
	const size = 16 << 20
	local := crashedPrimaryStore(t, size, 40)
	auth := &authority{v: View{Epoch: 2, Primary: "n1"}}
	// Addresses that refuse at first: both peers are down at the restart.
	var addrs [2]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	f := &fencer{epoch: 2, states: map[string]ReplicaState{"n3": Outdated}}
	p, err := NewPrimary(t.Context(), Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 2, Local: local,
		Peers: []PeerConfig{
			{Name: "n2", Addr: addrs[0], Slot: 0, InSync: true},
			{Name: "n3", Addr: addrs[1], Slot: 1, InSync: false},
		},
		Dial: dialAs("n1"), Fencer: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AckTimeout: time.Second, ReconnectInterval: 50 * time.Millisecond,
		ActivityLog: true, ActivitySlot: alSlot, ActivityExtent: local.gran})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Both come back with their old data (zeroes): only a resync can give
	// them the regions.
	n2 := startSecondary(t, "n2", newMemStore(size), auth, addrs[0])
	n3 := startSecondary(t, "n3", newMemStore(size), auth, addrs[1])
	deadline := time.Now().Add(2 * time.Minute)
	for f.state("n2") != UpToDate || f.state("n3") != UpToDate {
		if time.Now().After(deadline) {
			t.Fatalf("resync did not finish: n2 %s, n3 %s, log %v", f.state("n2"), f.state("n3"), f.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitIdentical(t, local, n2.store, "n2 after its resync")
	waitIdentical(t, local, n3.store, "n3 after its resync")
}

// markCheckStore fails a test's write when the bitmap slot of a fenced
// peer does not cover it yet: the mark must be durable before any disk
// sees the write (I2, I4).
type markCheckStore struct {
	*memStore
	slot    int
	checked atomic.Int64
	missed  atomic.Int64
}

func (m *markCheckStore) WriteAt(ctx context.Context, b []byte, off int64, f blockstore.WriteFlags) (int, error) {
	m.mu.Lock()
	for r := off / m.gran; r*m.gran < off+int64(len(b)); r++ {
		if !m.dirty[m.slot][r] {
			m.missed.Add(1)
		}
	}
	m.mu.Unlock()
	m.checked.Add(1)
	return m.memStore.WriteAt(ctx, b, off, f)
}

// TestFencedPeerMarkedBeforeLocalWrite: while a peer is fenced off, each
// write is recorded in its dirty bitmap before the local disk gets it, so
// a crash between the two cannot leave the write out of its resync.
func TestFencedPeerMarkedBeforeLocalWrite(t *testing.T) {
	local := &markCheckStore{memStore: newMemStore(volSize), slot: 0}
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the peer is down
	f := &fencer{epoch: 1, states: map[string]ReplicaState{"n2": Outdated}}
	p, err := NewPrimary(t.Context(), Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: local,
		Peers: []PeerConfig{{Name: "n2", Addr: addr, Slot: 0, InSync: false}},
		Dial:  dialAs("n1"), Fencer: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ReconnectInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	writeRandom(t, t.Context(), p, 7, 64)
	if local.checked.Load() == 0 {
		t.Fatal("no write reached the local store")
	}
	if n := local.missed.Load(); n > 0 {
		t.Fatalf("%d of %d local writes reached the disk before the fenced peer's dirty bit", n, local.checked.Load())
	}
	_ = auth
}
