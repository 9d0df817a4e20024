package replication

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// rawSession is a replication connection driven frame by frame.
type rawSession struct {
	t     *testing.T
	c     net.Conn
	r     *bufio.Reader
	epoch uint64
	seq   uint64
}

func openRaw(t *testing.T, addr, from string, epoch uint64) *rawSession {
	t.Helper()
	c, err := dialAs(from)(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &rawSession{t: t, c: c, r: bufio.NewReader(c), epoch: epoch}
	b, _ := json.Marshal(Hello{Volume: "vol", From: from, Epoch: epoch, Size: volSize, VolumeID: "id1"})
	if _, err := c.Write(AppendFrame(nil, Header{Type: FrameHello, Epoch: epoch}, b)); err != nil {
		t.Fatal(err)
	}
	return s
}

// helloAck reads the answer to the hello.
func (s *rawSession) helloAck() HelloAck {
	s.t.Helper()
	var hdr [headerSize]byte
	_, p, err := ReadFrame(s.r, hdr[:], nil)
	if err != nil {
		s.t.Fatal(err)
	}
	var ack HelloAck
	if err := json.Unmarshal(p, &ack); err != nil {
		s.t.Fatal(err)
	}
	return ack
}

func (s *rawSession) write(off int64, b []byte) {
	s.t.Helper()
	s.seq++
	if _, err := s.c.Write(AppendFrame(nil, Header{Type: FrameWrite, Seq: s.seq, Epoch: s.epoch, Offset: uint64(off)}, b)); err != nil {
		s.t.Fatal(err)
	}
}

// TestNewSessionWaitsForOlderSessionsFrames: a frame of the old primary
// that was checked but is still being applied when a new primary's
// session opens lands before the new primary's writes, never after them,
// and the old session's later frames are refused.
func TestNewSessionWaitsForOlderSessionsFrames(t *testing.T) {
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	store := newMemStore(volSize)
	sec := startSecondary(t, "n2", store, auth, "")
	addr := sec.ln.Addr().String()

	old := openRaw(t, addr, "n1", 1)
	if a := old.helloAck(); a.Status != StatusOK {
		t.Fatalf("old session refused: %v %s", a.Status, a.Message)
	}
	// The old primary's write reaches the disk slowly.
	gate := make(chan struct{})
	store.gate.Store(&gate)
	old.write(0, bytes.Repeat([]byte{0x01}, 4096))
	deadline := time.Now().Add(time.Minute)
	for !sec.sec.gate(&Target{Name: "vol", VolumeID: "id1"}).busy() {
		if time.Now().After(deadline) {
			t.Fatal("the old write never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	store.gate.Store(nil) // only the old write is held

	// A promotion: n3 is the primary of epoch 2 and writes the same block.
	auth.set(View{Epoch: 2, Primary: "n3"})
	acked := make(chan HelloAck, 1)
	nu := openRaw(t, addr, "n3", 2)
	go func() { acked <- nu.helloAck() }()
	g := sec.sec.gate(&Target{Name: "vol", VolumeID: "id1"})
	for {
		g.mu.Lock()
		waiting := g.waiting
		g.mu.Unlock()
		if waiting > 0 {
			break // new session held back, as it must be
		}
		select {
		case a := <-acked:
			t.Fatalf("the new session was accepted (%v) while the old session's write was still being applied", a.Status)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the new session neither waited nor was accepted")
		}
	}
	close(gate) // the old write completes
	if a := <-acked; a.Status != StatusOK {
		t.Fatalf("new session refused: %v %s", a.Status, a.Message)
	}
	nu.write(0, bytes.Repeat([]byte{0x02}, 4096))
	var hdr [headerSize]byte
	h, _, err := ReadFrame(nu.r, hdr[:], nil)
	if err != nil || h.Type != FrameAck || Status(h.Flags) != StatusOK {
		t.Fatalf("new write: %+v %v", h, err)
	}
	if got := store.snapshot()[0]; got != 0x02 {
		t.Fatalf("block 0 holds %#x after the new primary's write, want 0x02", got)
	}
}

func (g *sessionGate) busy() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.applying) > 0
}

// TestSupersededConnectionOfSameEpochDoesNotDepose: the fault-schedule
// runner's seed 2073. The primary's reconnect attempt timed out in its hello
// while the replica's tandemd was stopped (SIGSTOP); resumed, the replica
// accepted that abandoned connection after the primary's next, live one,
// and the late session superseded the live one. Its next frame was refused
// as a stale epoch and the primary deposed itself for good, though no newer
// epoch existed. A connection superseded by one of the same epoch is a lost
// link: the primary fences the peer, resyncs it, and writes go on.
func TestSupersededConnectionOfSameEpochDoesNotDepose(t *testing.T) {
	r := newRig(t, 1, 2*time.Second)
	writeRandom(t, r.ctx, r.p, 11, 40)

	// The late connection: this primary's node and epoch, its sender gone.
	late := openRaw(t, r.secs[0].ln.Addr().String(), "n1", 1)
	if a := late.helloAck(); a.Status != StatusOK {
		t.Fatalf("late connection refused: %v %s", a.Status, a.Message)
	}
	late.c.Close()

	// The live connection's next frame is refused as superseded.
	if _, err := r.p.WriteAt(r.ctx, bytes.Repeat([]byte{7}, 4096), 0, 0); err != nil {
		t.Fatalf("write after a connection of the same epoch superseded the primary's: %v", err)
	}
	writeRandom(t, r.ctx, r.p, 12, 40)
	r.waitState(t, "n2", UpToDate, 20*time.Second)
	if !slices.Contains(r.fence.log, "n2=Outdated") {
		t.Fatalf("the superseded link was not fenced: %v", r.fence.log)
	}
	if err := r.p.Flush(r.ctx); err != nil {
		t.Fatal(err)
	}
	if l := r.link("n2"); l != "in-sync" {
		t.Fatalf("link is %s after the resync", l)
	}
	r.requireIdentical(t)
}

// TestStalePrimaryStillDeposedBySupersedingEpoch: a connection superseded
// by a newer epoch's primary is a deposition, as before.
func TestStalePrimaryStillDeposedBySupersedingEpoch(t *testing.T) {
	r := newRig(t, 1, 2*time.Second)
	writeRandom(t, r.ctx, r.p, 13, 20)
	r.auth.set(View{Epoch: 2, Primary: "n3"})
	nu := openRaw(t, r.secs[0].ln.Addr().String(), "n3", 2)
	if a := nu.helloAck(); a.Status != StatusOK {
		t.Fatalf("new primary refused: %v %s", a.Status, a.Message)
	}
	// The view this replica applied may lag behind the read that confirmed
	// the new primary: with it still at epoch 1, only the session gate
	// tells the old primary it was superseded.
	r.auth.set(View{Epoch: 1, Primary: "n1"})
	before := r.secs[0].store.snapshot()
	_, err := r.p.WriteAt(r.ctx, bytes.Repeat([]byte{9}, 4096), 8192, 0)
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("write of a primary superseded by a newer epoch: %v", err)
	}
	if !bytes.Equal(before, r.secs[0].store.snapshot()) {
		t.Fatal("the replica applied a superseded primary's write")
	}
	if _, err := r.p.WriteAt(r.ctx, []byte{1}, 0, 0); !errors.Is(err, ErrDeposed) {
		t.Fatalf("deposed primary still writes: %v", err)
	}
}

// slowAuthority holds its first Refresh after reading the view, as a
// linearizable read that returns late does.
type slowAuthority struct {
	*authority
	once    sync.Once
	read    chan struct{} // closed when the held Refresh has read
	release chan struct{}
}

func (a *slowAuthority) Refresh(ctx context.Context) (View, error) {
	v := a.View()
	held := false
	a.once.Do(func() { held = true })
	if held {
		close(a.read)
		<-a.release
	}
	return v, nil
}

// TestLateSessionOfOlderEpochDoesNotSupersede: a hello of epoch 1 whose
// confirming read returned before a promotion but whose session began
// after the new primary's (epoch 2) must not supersede the new primary's
// session: it would depose the rightful primary. It is refused.
func TestLateSessionOfOlderEpochDoesNotSupersede(t *testing.T) {
	auth := &slowAuthority{authority: &authority{v: View{Epoch: 1, Primary: "n1"}}, read: make(chan struct{}), release: make(chan struct{})}
	store := newMemStore(volSize)
	sec := startSecondary(t, "n2", store, auth.authority, "")
	sec.sec.lookup = func(vol string) (*Target, error) {
		return &Target{Name: vol, Store: store, VolumeID: "id1", Authority: auth}, nil
	}
	addr := sec.ln.Addr().String()

	old := openRaw(t, addr, "n1", 1)
	<-auth.read // confirmed epoch 1, not begun yet
	auth.set(View{Epoch: 2, Primary: "n3"})
	nu := openRaw(t, addr, "n3", 2)
	if a := nu.helloAck(); a.Status != StatusOK {
		t.Fatalf("new primary refused: %v %s", a.Status, a.Message)
	}
	close(auth.release)
	if a := old.helloAck(); a.Status != StatusStaleEpoch {
		t.Fatalf("late session of the old epoch: %v %s, want %v", a.Status, a.Message, StatusStaleEpoch)
	}
	nu.write(0, bytes.Repeat([]byte{0x02}, 4096))
	var hdr [headerSize]byte
	h, p, err := ReadFrame(nu.r, hdr[:], nil)
	if err != nil || h.Type != FrameAck || Status(h.Flags) != StatusOK {
		t.Fatalf("new primary's write after the late hello: %+v %s %v", h, p, err)
	}
}

// TestGateOfRecreatedVolume: a gate remembers the newest epoch it let in,
// so a volume deleted and created again under its name (epoch 1 again, a
// new volume ID) gets a gate of its own; the old volume's stays refused.
func TestGateOfRecreatedVolume(t *testing.T) {
	s := &Secondary{gates: map[gateKey]*sessionGate{}}
	if _, err := s.gate(&Target{Name: "vol", VolumeID: "id1"}).begin(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.gate(&Target{Name: "vol", VolumeID: "id2"}).begin(t.Context(), 1); err != nil {
		t.Fatalf("the recreated volume's first session: %v", err)
	}
	if _, err := s.gate(&Target{Name: "vol", VolumeID: "id1"}).begin(t.Context(), 1); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("an older epoch of the same volume: %v, want ErrStaleEpoch", err)
	}
}

// TestPrimaryDone: Done closes when the primary stops serving for good,
// whichever way (Retire, Close), and not before: the NBD export ends its
// clients' connections then, so that QEMU reconnects to what serves the
// volume now instead of retrying a retired primary for good.
func TestPrimaryDone(t *testing.T) {
	open := func() *Primary {
		p, err := NewPrimary(t.Context(), Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: newMemStore(volSize),
			Dial: dialAs("n1"), Fencer: &fencer{epoch: 1}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	isDone := func(p *Primary) bool {
		select {
		case <-p.Done():
			return true
		default:
			return false
		}
	}
	p := open()
	writeRandom(t, t.Context(), p, 1, 4)
	if isDone(p) {
		t.Fatal("Done closed while serving")
	}
	p.Retire(errors.New("handed over"))
	p.Retire(errors.New("again")) // idempotent
	if !isDone(p) {
		t.Fatal("Done not closed after Retire")
	}
	if q := open(); q.Close() != nil || !isDone(q) {
		t.Fatal("Done not closed after Close")
	}
}
