package replication

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// tap records the bytes that cross a connection, as the wire carries them.
type tap struct {
	net.Conn
	mu       sync.Mutex
	out, in  bytes.Buffer
	closedIn bool // the peer's side ended (EOF or a closed conn)
}

func (c *tap) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tap) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in.Write(p[:n])
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) { // not leaveTLS's look
		c.closedIn = true
	}
	c.mu.Unlock()
	return n, err
}

// captured returns copies of what was written and read so far.
func (c *tap) captured() (out, in []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes()), bytes.Clone(c.in.Bytes())
}

// tlsRig is a primary and one secondary over mutual TLS on loopback, the
// primary dialing as the daemon does (the cork under the TLS client), with
// its TCP connections tapped when capture is set (not in benchmarks: the
// tap keeps every byte).
type tlsRig struct {
	*rig
	mu      sync.Mutex
	taps    []*tap
	served  chan error // what each ServeConn returned
	stopSec context.CancelFunc
}

func newTLSRig(t testing.TB, primaryPlain, secondaryPlain, capture bool) *tlsRig {
	t.Helper()
	srvTLS, cliTLS := selfSignedTLS(t)
	cliTLS.ServerName = "127.0.0.1"
	r := &tlsRig{rig: &rig{local: newMemStore(volSize), auth: &authority{v: View{Epoch: 1, Primary: "n1"}}, fence: &fencer{epoch: 1, states: map[string]ReplicaState{}, primary: "n1", peers: []string{"n2"}}},
		served: make(chan error, 16)}
	r.ctx, r.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(r.cancel)

	// The secondary, as Serve runs it, but with ServeConn's error kept.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore(volSize)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fromCN := func(st tls.ConnectionState) (string, error) {
		if len(st.VerifiedChains) == 0 {
			return "", errors.New("no verified chain")
		}
		return st.VerifiedChains[0][0].Subject.CommonName, nil
	}
	sec := NewSecondary(log, func(vol string) (*Target, error) {
		if vol != "vol" {
			return nil, ErrUnknownVolume
		}
		return &Target{Name: vol, Store: store, VolumeID: "id1", Authority: r.auth, PlainStream: secondaryPlain}, nil
	}, fromCN)
	sctx, stop := context.WithCancel(context.Background())
	r.stopSec = stop
	sn := &secondaryNode{name: "n2", store: store, auth: r.auth, ln: ln, sec: sec, stop: stop, done: make(chan struct{})}
	tln := tls.NewListener(ln, srvTLS)
	go func() {
		<-sctx.Done()
		sec.mu.Lock()
		for c := range sec.conns {
			c.Close()
		}
		sec.mu.Unlock()
	}()
	go func() {
		defer close(sn.done)
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				peer, err := sec.tlsPeer(sctx, c)
				if err == nil {
					err = sec.ServeConn(sctx, c, peer)
				} else {
					c.Close()
				}
				select {
				case r.served <- err:
				default: // reconnects to a stopped secondary
				}
			}()
		}
	}()
	t.Cleanup(sn.kill)
	r.secs = []*secondaryNode{sn}

	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		under := raw
		if capture {
			tp := &tap{Conn: raw}
			r.mu.Lock()
			r.taps = append(r.taps, tp)
			r.mu.Unlock()
			under = tp
		}
		c := tls.Client(NewCorkConn(under), cliTLS)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return c, nil
	}
	p, err := NewPrimary(r.ctx, Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: r.local,
		Peers: []PeerConfig{{Name: "n2", Addr: ln.Addr().String(), Slot: 0, InSync: true}},
		Dial:  dial, Fencer: r.fence, Log: log, AckTimeout: 5 * time.Second, ReconnectInterval: 50 * time.Millisecond,
		PlainStream: primaryPlain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r.p = p
	return r
}

func (r *tlsRig) firstTap(t *testing.T) *tap {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.taps) == 0 {
		t.Fatal("no connection was dialed")
	}
	return r.taps[0]
}

// splitTLS walks the TLS records at the start of a captured stream and
// returns where they end: the first byte that cannot start a TLS record
// (a frame's magic "TDMR" cannot) or the end of the capture.
func splitTLS(t *testing.T, b []byte) int {
	t.Helper()
	off := 0
	for off < len(b) {
		if b[off] < 20 || b[off] > 23 { // change_cipher_spec .. application_data
			return off
		}
		if len(b)-off < 5 {
			t.Fatalf("a partial TLS record header at %d of %d", off, len(b))
		}
		n := int(binary.BigEndian.Uint16(b[off+3:]))
		if len(b)-off-5 < n {
			t.Fatalf("a partial TLS record at %d of %d", off, len(b))
		}
		off += 5 + n
	}
	return off
}

// frames decodes b as whole frames and nothing else (no stray byte, no
// partial frame at the end).
func frames(t *testing.T, b []byte) []Header {
	t.Helper()
	var hs []Header
	r := bytes.NewReader(b)
	var hdr [headerSize]byte
	for r.Len() > 0 {
		h, _, err := ReadFrame(r, hdr[:], nil)
		if err != nil {
			t.Fatalf("the plain stream after %d frames (%d of %d bytes left): %v", len(hs), r.Len(), len(b), err)
		}
		hs = append(hs, h)
	}
	return hs
}

// canary is a block whose bytes show in any capture that carries it in the
// clear.
func canary() []byte {
	return bytes.Repeat([]byte("tandem plain-stream canary 0123456789abcdef!\n"), 4096/45+1)[:4096]
}

func (r *tlsRig) writeAndCheck(t *testing.T) {
	t.Helper()
	writeRandom(t, r.ctx, r.p, 7, 64)
	writeRandomSized(t, r.ctx, r.p, 8, 16, 512) // frames up to 2 MiB: batched by the cork
	if _, err := r.p.WriteAt(r.ctx, canary(), 7<<20, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.p.Flush(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.requireIdentical(t)
	got := make([]byte, 4096)
	if _, err := r.p.ReadAt(r.ctx, got, 7<<20); err != nil || !bytes.Equal(got, canary()) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, canary()))
	}
}

func (r *tlsRig) stream(t *testing.T) string {
	t.Helper()
	st := r.p.Status()
	if len(st) != 1 || st[0].State != "in-sync" {
		t.Fatalf("status: %+v", st)
	}
	return st[0].Stream
}

// TestPlainStreamWhenBothAgree: with both sides set to plain, the
// handshake and the Hello/HelloAck are TLS and everything after them is
// frames in the clear; writes replicate, and closing the primary ends the
// secondary's stream cleanly (no close_notify in the plain stream).
func TestPlainStreamWhenBothAgree(t *testing.T) {
	r := newTLSRig(t, true, true, true)
	if s := r.stream(t); s != StreamPlain {
		t.Fatalf("stream %q, want %q", s, StreamPlain)
	}
	// The frames go to the TCP connection through the cork the dialer put
	// under the TLS client, which still batches them.
	pe := r.p.peers[0]
	pe.mu.Lock()
	conn, cork := pe.conn, pe.cork
	pe.mu.Unlock()
	if cc, ok := conn.(*CorkConn); !ok || cork != corker(cc) {
		t.Fatalf("the plain stream is written to %T with cork %v, want the CorkConn", conn, cork)
	}
	r.writeAndCheck(t)
	tp := r.firstTap(t)
	out, in := tp.captured()
	if !bytes.Contains(out, canary()[:64]) {
		t.Fatal("the written block is not in the clear on the wire")
	}
	// Each direction: TLS records (handshake, then the Hello or the
	// HelloAck), then frames only.
	outTLS, inTLS := splitTLS(t, out), splitTLS(t, in)
	if outTLS == len(out) || inTLS == len(in) {
		t.Fatalf("no plain part: out %d/%d, in %d/%d", outTLS, len(out), inTLS, len(in))
	}
	if bytes.Contains(out[:outTLS], canary()[:64]) {
		t.Fatal("the TLS part carries the data in the clear")
	}
	outFrames, inFrames := frames(t, out[outTLS:]), frames(t, in[inTLS:])
	if outFrames[0].Type == FrameHello || inFrames[0].Type == FrameHelloAck {
		t.Fatal("the hello exchange went in the clear")
	}

	// Closing the primary closes the TCP connection: the secondary reads a
	// clean end of stream after whole frames, not an alert.
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.served:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the secondary's stream ended with %v, want EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the secondary did not see the primary close")
	}
	out, _ = tp.captured()
	frames(t, out[outTLS:])
}

// TestPlainStreamSecondaryCloses: a secondary that stops closes the TCP
// connection under the TLS session: the primary reads whole frames and
// then the end of the stream.
func TestPlainStreamSecondaryCloses(t *testing.T) {
	r := newTLSRig(t, true, true, true)
	r.writeAndCheck(t)
	r.stopSec()
	tp := r.firstTap(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tp.mu.Lock()
		done := tp.closedIn
		tp.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the primary did not see the secondary close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, in := tp.captured()
	frames(t, in[splitTLS(t, in):])
}

// TestPlainStreamNeedsBothSides: a side that keeps TLS keeps the whole
// stream encrypted, whichever side it is, and replication works as usual.
func TestPlainStreamNeedsBothSides(t *testing.T) {
	for _, tc := range []struct {
		name               string
		primary, secondary bool
	}{
		{"primary plain, secondary tls", true, false},
		{"primary tls, secondary plain", false, true},
		{"both tls", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTLSRig(t, tc.primary, tc.secondary, true)
			if s := r.stream(t); s != StreamTLS {
				t.Fatalf("stream %q, want %q", s, StreamTLS)
			}
			r.writeAndCheck(t)
			out, in := r.firstTap(t).captured()
			if bytes.Contains(out, canary()[:64]) {
				t.Fatal("the written block crossed the wire in the clear")
			}
			if n := splitTLS(t, out); n != len(out) {
				t.Fatalf("primary's stream leaves TLS at %d of %d", n, len(out))
			}
			if n := splitTLS(t, in); n != len(in) {
				t.Fatalf("secondary's stream leaves TLS at %d of %d", n, len(in))
			}
			if err := r.p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-r.served; !errors.Is(err, io.EOF) {
				t.Fatalf("the secondary's stream ended with %v, want EOF", err)
			}
		})
	}
}

// TestPlainRefusedWithDataAfterHello: a primary that asks for a plain
// stream but sends a frame behind its Hello (which this protocol never
// does) is refused rather than switched mid-stream.
func TestPlainRefusedWithDataAfterHello(t *testing.T) {
	srvTLS, cliTLS := selfSignedTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore(volSize)
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	sec := NewSecondary(slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) (*Target, error) {
		return &Target{Name: "vol", Store: store, VolumeID: "id1", Authority: auth, PlainStream: true}, nil
	}, func(tls.ConnectionState) (string, error) { return "n1", nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sec.Serve(ctx, tls.NewListener(ln, srvTLS)) }()
	defer func() {
		cancel()
		<-done
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cliTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := json.Marshal(Hello{Volume: "vol", From: "n1", Epoch: 1, Size: volSize, VolumeID: "id1", Plain: true})
	msg := AppendFrame(nil, Header{Type: FrameHello, Epoch: 1}, b)
	// Small enough for one TLS record (the first records of a Go TLS
	// session are about 1 KiB).
	msg = AppendFrame(msg, Header{Type: FrameWrite, Seq: 1, Epoch: 1}, canary()[:64])
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var hdr [headerSize]byte
	_, p, err := ReadFrame(c, hdr[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	var ack HelloAck
	if err := json.Unmarshal(p, &ack); err != nil {
		t.Fatal(err)
	}
	if ack.Status != StatusBadFrame || ack.Plain {
		t.Fatalf("ack %+v, want a bad-frame refusal", ack)
	}
	if bytes.Contains(store.snapshot(), canary()[:64]) {
		t.Fatal("the frame behind the hello was applied")
	}
}

// TestLeaveTLSRefusesReadAhead: a TLS record already read from the socket
// when the stream leaves TLS is an error, not a lost record.
func TestLeaveTLSRefusesReadAhead(t *testing.T) {
	for _, extra := range []bool{false, true} {
		t.Run(fmt.Sprintf("extra record %v", extra), func(t *testing.T) {
			srvTLS, cliTLS := selfSignedTLS(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				raw, err := ln.Accept()
				if err != nil {
					return
				}
				defer raw.Close()
				cc := NewCorkConn(raw)
				s := tls.Server(cc, srvTLS)
				if err := s.Handshake(); err != nil {
					return
				}
				// Two records in one TCP write: the client's TLS layer
				// reads both when it reads the first.
				cc.Cork()
				_, _ = s.Write([]byte("first"))
				if extra {
					_, _ = s.Write([]byte("second"))
				}
				_ = cc.Uncork()
				_, _ = io.Copy(io.Discard, raw)
			}()
			cliTLS.ServerName = "127.0.0.1"
			c, err := tls.Dial("tcp", ln.Addr().String(), cliTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer c.NetConn().Close()
			b := make([]byte, len("first"))
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "first" {
				t.Fatalf("read %q, %v", b, err)
			}
			raw, err := leaveTLS(c)
			if extra {
				if err == nil || !errors.Is(err, ErrBadFrame) {
					t.Fatalf("leaveTLS with a record read ahead: %v, want an error", err)
				}
				return
			}
			if err != nil || raw != c.NetConn() {
				t.Fatalf("leaveTLS: %v, %v", raw, err)
			}
			// The connection under it still works, with no deadline left.
			if _, err := raw.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
