package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// A flush on the primary reaches the local disk only after the writes
// submitted before it: they may still be in the disk's hands.
func TestPrimaryFlushOrdersAfterEarlierWrites(t *testing.T) {
	r := newRig(t, 1, 30*time.Second)
	gate := make(chan struct{})
	r.local.gate.Store(&gate)
	r.secs[0].store.gate.Store(&gate)
	errc := make(chan error, 2)
	go func() {
		_, err := r.p.WriteAt(r.ctx, bytes.Repeat([]byte{1}, 4096), 0, 0)
		errc <- err
	}()
	// The write takes its place first (it then blocks in the gate).
	deadline := time.Now().Add(5 * time.Second)
	for r.p.order.Idle() {
		if time.Now().After(deadline) {
			t.Fatal("the write never started")
		}
		time.Sleep(time.Millisecond)
	}
	go func() { errc <- r.p.Flush(r.ctx) }()
	time.Sleep(100 * time.Millisecond)
	if n := r.local.flushs.Load(); n != 0 {
		t.Fatalf("the local flush ran (%d) while an earlier write was in flight", n)
	}
	close(gate)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if n := r.local.flushs.Load(); n != 1 {
		t.Fatalf("local flushes: %d, want 1", n)
	}
}

// A secondary applies a flush only after the frames before it, even when
// it applies them in parallel (both frames arrive at once).
func TestSecondaryFlushOrdersAfterEarlierFrames(t *testing.T) {
	store := newMemStore(volSize)
	gate := make(chan struct{})
	store.gate.Store(&gate)
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	sec := NewSecondary(slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) (*Target, error) {
		return &Target{Name: "vol", Store: store, VolumeID: "id1", Authority: auth}, nil
	}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c, s := net.Pipe()
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- sec.ServeConn(ctx, s, "n1") }()

	hello, err := json.Marshal(Hello{Volume: "vol", VolumeID: "id1", From: "n1", Epoch: 1, Size: volSize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(AppendFrame(nil, Header{Type: FrameHello, Epoch: 1}, hello)); err != nil {
		t.Fatal(err)
	}
	var hdr [headerSize]byte
	if h, _, err := ReadFrame(c, hdr[:], nil); err != nil || h.Type != FrameHelloAck {
		t.Fatalf("hello ack: %v %v", h.Type, err)
	}
	acks := make(chan Header, 4)
	go func() {
		var hdr [headerSize]byte
		for {
			h, _, err := ReadFrame(c, hdr[:], nil)
			if err != nil {
				close(acks)
				return
			}
			if h.Type == FrameAck {
				acks <- h
			}
		}
	}()
	// One write call: the secondary reads both frames at once.
	frames := AppendFrame(nil, Header{Type: FrameWrite, Seq: 1, Epoch: 1, Offset: 0}, bytes.Repeat([]byte{1}, 4096))
	frames = AppendFrame(frames, Header{Type: FrameFlush, Seq: 2, Epoch: 1}, nil)
	if _, err := c.Write(frames); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := store.flushs.Load(); n != 0 {
		t.Fatalf("the flush was applied (%d) while the write before it was in flight", n)
	}
	close(gate)
	for range 2 {
		select {
		case h, ok := <-acks:
			if !ok {
				t.Fatal("connection ended before the acks")
			}
			if Status(h.Flags) != StatusOK {
				t.Fatalf("ack of %d: %s", h.Seq, Status(h.Flags))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no ack")
		}
	}
	if n := store.flushs.Load(); n != 1 {
		t.Fatalf("flushes: %d, want 1", n)
	}
	c.Close()
	<-done
}
