package replication

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestLateFenceAfterRestartIsRealigned is the regression test of the
// fault-schedule runner's finding 2 (seed 1014 of its long profile): a
// primary proposes "peer Outdated", dies before it commits, and restarts
// at the same epoch; its new incarnation links the peer in sync, as the
// record still says UpToDate; then the old proposal commits. The record
// says Outdated and the link in sync, and nothing would ever resync the
// peer. Realign, which the volume layer calls when the record and the
// links disagree, makes them agree: the peer is fenced and resynced, and
// ends UpToDate and identical.
func TestLateFenceAfterRestartIsRealigned(t *testing.T) {
	r := newRig(t, 1, 2*time.Second)
	writeRandom(t, r.ctx, r.p, 11, 100)
	old := r.secs[0]
	addr := old.ln.Addr().String()

	// The first incarnation loses its link to n2 and proposes the fence;
	// the proposal is held.
	r.fence.mu.Lock()
	r.fence.held, r.fence.outdating = make(chan struct{}), make(chan string, 4)
	r.fence.mu.Unlock()
	old.kill()
	select {
	case peer := <-r.fence.outdating:
		if peer != "n2" {
			t.Fatalf("fence proposed for %s", peer)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first incarnation never proposed the fence")
	}
	sec := startSecondary(t, "n2", old.store, r.auth, addr)
	first := r.p
	closed := make(chan struct{})
	go func() { first.Close(); close(closed) }() // it dies; its proposal lives on

	// The second incarnation, same node and epoch, reads the record before
	// the fence commits: n2 UpToDate, linked in sync.
	p, err := NewPrimary(r.ctx, Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: r.local,
		Peers: []PeerConfig{{Name: "n2", Addr: addr, Slot: 0, InSync: true}},
		Dial:  dialAs("n1"), Fencer: r.fence, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AckTimeout: 2 * time.Second, ReconnectInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r.p = p
	writeRandom(t, r.ctx, p, 12, 100)

	// Nothing needs realigning while the record and the links agree.
	if fenced, err := p.Realign(r.ctx, r.fence.read); err != nil || len(fenced) != 0 {
		t.Fatalf("Realign with an agreeing record fenced %v (err %v)", fenced, err)
	}

	// The old proposal commits.
	r.fence.mu.Lock()
	held := r.fence.held
	r.fence.held = nil
	r.fence.mu.Unlock()
	close(held)
	<-closed
	if st := r.fence.state("n2"); st != Outdated {
		t.Fatalf("after the late commit n2 is recorded %s, want Outdated", st)
	}
	if link := r.link("n2"); link != "in-sync" {
		t.Fatalf("after the late commit the link to n2 is %s, want in-sync (the disagreement under test)", link)
	}

	// A record at another epoch is another primary's business.
	if fenced, err := p.Realign(r.ctx, func(ctx context.Context) (uint64, map[string]ReplicaState, error) {
		return 2, map[string]ReplicaState{"n2": Outdated}, nil
	}); err != nil || len(fenced) != 0 {
		t.Fatalf("Realign with a record of epoch 2 fenced %v (err %v)", fenced, err)
	}

	fenced, err := p.Realign(r.ctx, r.fence.read)
	if err != nil || !slices.Equal(fenced, []string{"n2"}) {
		t.Fatalf("Realign fenced %v (err %v), want [n2]", fenced, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for r.fence.state("n2") != UpToDate || r.link("n2") != "in-sync" {
		if time.Now().After(deadline) {
			t.Fatalf("n2 is recorded %s and linked %s, want UpToDate and in-sync; log %v", r.fence.state("n2"), r.link("n2"), r.fence.log)
		}
		writeRandom(t, r.ctx, p, uint64(time.Now().UnixNano()), 8) // writes go on meanwhile
		time.Sleep(20 * time.Millisecond)
	}
	writeRandom(t, r.ctx, p, 13, 50)
	if !bytes.Equal(sec.store.snapshot(), r.local.snapshot()) {
		t.Fatal("n2 differs from the primary after the realign")
	}
	if i := slices.Index(r.fence.log, "n2=Outdated"); i < 0 || !slices.Contains(r.fence.log[i:], "n2=UpToDate") {
		t.Fatalf("fencer log %v: want the late Outdated, then a resync to UpToDate", r.fence.log)
	}
}
