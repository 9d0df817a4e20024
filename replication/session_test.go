package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
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
	for !sec.sec.gate("vol").busy() {
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
	g := sec.sec.gate("vol")
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
