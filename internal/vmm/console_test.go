package vmm

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// chanStream is the far end of a console stream: frames the client sends
// come from in (closed: the client's end of sending, or err when set),
// frames the server sends go to out.
type chanStream struct {
	in  chan *tandemv1.ConsoleFrame
	err error
	out chan *tandemv1.ConsoleFrame
}

func newChanStream() *chanStream {
	return &chanStream{in: make(chan *tandemv1.ConsoleFrame, 16), out: make(chan *tandemv1.ConsoleFrame, 1024)}
}

func (s *chanStream) Recv() (*tandemv1.ConsoleFrame, error) {
	f, ok := <-s.in
	if !ok {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	return f, nil
}

func (s *chanStream) Send(f *tandemv1.ConsoleFrame) error {
	// Send must not keep f's buffer: copy as a marshal would.
	s.out <- &tandemv1.ConsoleFrame{Data: append([]byte(nil), f.Data...), Opened: f.Opened}
	return nil
}

func (s *chanStream) CloseSend() error { close(s.in); return nil }

// echoServer is a real TCP server (the console's stand-in end is the
// stream, not the console): it echoes, and reports when a client's
// connection ended.
func echoServer(t *testing.T) (addr string, ended chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ended = make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				c.Close()
				ended <- struct{}{}
			}()
		}
	}()
	return ln.Addr().String(), ended
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPipeBothWaysUntilClientEnds(t *testing.T) {
	addr, ended := echoServer(t)
	st := newChanStream()
	done := make(chan error, 1)
	go func() { done <- pipe(dial(t, addr), st) }()
	st.in <- &tandemv1.ConsoleFrame{Data: []byte("hello\n")}
	var got []byte
	for len(got) < 6 {
		got = append(got, (<-st.out).Data...)
	}
	if string(got) != "hello\n" {
		t.Fatalf("echoed %q", got)
	}
	close(st.in) // the client ends its side
	if err := <-done; err != nil {
		t.Fatalf("pipe after the client's end: %v", err)
	}
	<-ended // the console connection was closed
}

func TestPipeBadFrameClosesConsole(t *testing.T) {
	for name, f := range map[string]*tandemv1.ConsoleFrame{
		"second open": {Open: &tandemv1.ConsoleOpen{Vm: "g1"}},
		"opened":      {Opened: "node n1"},
	} {
		t.Run(name, func(t *testing.T) {
			addr, ended := echoServer(t)
			st := newChanStream()
			done := make(chan error, 1)
			go func() { done <- pipe(dial(t, addr), st) }()
			st.in <- f
			err := <-done
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("pipe with a bad frame: %v", err)
			}
			<-ended
		})
	}
}

func TestPipeClientGoesAway(t *testing.T) {
	addr, ended := echoServer(t)
	st := newChanStream()
	st.err = status.Error(codes.Canceled, "context canceled")
	done := make(chan error, 1)
	go func() { done <- pipe(dial(t, addr), st) }()
	close(st.in) // Recv fails as when the client's connection drops
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("pipe after the client went away: %v", err)
	}
	<-ended
}

func TestPipeConsoleEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("bye"))
			c.Close()
		}
	}()
	st := newChanStream()
	if err := pipe(dial(t, ln.Addr().String()), st); err != nil {
		t.Fatalf("pipe after the console's end: %v", err)
	}
	if f := <-st.out; string(f.Data) != "bye" {
		t.Fatalf("got %q", f.Data)
	}
}

func TestOpenFrame(t *testing.T) {
	for name, tc := range map[string]struct {
		f    *tandemv1.ConsoleFrame
		code codes.Code
	}{
		"ok":         {&tandemv1.ConsoleFrame{Open: &tandemv1.ConsoleOpen{Vm: "g1"}}, codes.OK},
		"data first": {&tandemv1.ConsoleFrame{Data: []byte("x")}, codes.InvalidArgument},
		"no vm":      {&tandemv1.ConsoleFrame{Open: &tandemv1.ConsoleOpen{}}, codes.InvalidArgument},
		"open+data":  {&tandemv1.ConsoleFrame{Open: &tandemv1.ConsoleOpen{Vm: "g1"}, Data: []byte("x")}, codes.InvalidArgument},
		"nothing":    {nil, codes.InvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			st := newChanStream()
			if tc.f != nil {
				st.in <- tc.f
			}
			close(st.in)
			open, err := openFrame(st)
			if status.Code(err) != tc.code {
				t.Fatalf("openFrame: %v, want %v", err, tc.code)
			}
			if err == nil && open.Vm != "g1" {
				t.Fatalf("open %v", open)
			}
		})
	}
}

// TestRelay forwards between a client stream and a peer's stream: data
// both ways, a bad frame from the client ends the peer's stream (cancel)
// and is the answer, and the client's end closes the peer's send side.
func TestRelay(t *testing.T) {
	t.Run("data and end", func(t *testing.T) {
		st, ps := newChanStream(), newChanStream()
		// ps.in is what the peer answers; ps.out what the relay sent it.
		done := make(chan error, 1)
		go func() { done <- relay(st, ps, func() {}) }()
		st.in <- &tandemv1.ConsoleFrame{Data: []byte("key")}
		if f := <-ps.out; string(f.Data) != "key" {
			t.Fatalf("peer got %q", f.Data)
		}
		ps.in <- &tandemv1.ConsoleFrame{Data: []byte("screen")}
		if f := <-st.out; string(f.Data) != "screen" {
			t.Fatalf("client got %q", f.Data)
		}
		close(st.in) // the client's end: CloseSend closes ps.in, the peer's end
		if err := <-done; err != nil {
			t.Fatalf("relay: %v", err)
		}
	})
	t.Run("bad frame", func(t *testing.T) {
		st, ps := newChanStream(), newChanStream()
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-ctx.Done(); ps.err = ctx.Err(); close(ps.in) }()
		done := make(chan error, 1)
		go func() { done <- relay(st, &cancelStream{ps}, cancel) }()
		st.in <- &tandemv1.ConsoleFrame{Open: &tandemv1.ConsoleOpen{Vm: "g1"}}
		if err := <-done; status.Code(err) != codes.InvalidArgument {
			t.Fatalf("relay with a bad frame: %v", err)
		}
	})
	t.Run("peer refuses", func(t *testing.T) {
		st, ps := newChanStream(), newChanStream()
		ps.err = status.Error(codes.FailedPrecondition, "VM g1 does not run on node n2")
		close(ps.in)
		err := relay(st, &cancelStream{ps}, func() {})
		if status.Code(err) != codes.FailedPrecondition || !errors.Is(err, ps.err) {
			t.Fatalf("relay after the peer's refusal: %v", err)
		}
	})
}

// cancelStream is a peer stream whose CloseSend does not end its Recv
// (the peer decides when to end).
type cancelStream struct{ *chanStream }

func (s *cancelStream) CloseSend() error { return nil }

func TestConsoleSessionsOneAtATime(t *testing.T) {
	var s consoleSessions
	release, ok := s.take("g1")
	if !ok {
		t.Fatal("first session refused")
	}
	if _, ok := s.take("g1"); ok {
		t.Fatal("second session to g1 taken")
	}
	if r2, ok := s.take("g2"); !ok {
		t.Fatal("session to g2 refused")
	} else {
		r2()
	}
	release()
	if _, ok := s.take("g1"); !ok {
		t.Fatal("session after release refused")
	}
}
