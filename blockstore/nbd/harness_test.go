package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// harness runs one Server on a unix socket and on TCP loopback, plus a
// ServeTLS listener on TCP loopback when the server has WithTLS.
type harness struct {
	srv     *Server
	sock    string // unix socket path
	tcp     string // host:port
	tlsAddr string // host:port of the ServeTLS listener, if any
	exports map[string]*Export
	cancel  context.CancelFunc
	errs    chan error
	serving int // Serve calls to wait for
}

// Export names the test lookup refuses with an error of its own.
const (
	notPrimary = "notprimary"
	draining   = "draining"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("NBD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func mapLookup(exports map[string]*Export) Lookup {
	return func(_ context.Context, name string) (*Export, error) {
		switch name {
		case notPrimary:
			return nil, fmt.Errorf("this node is not the primary of volume %s", name)
		case draining:
			return nil, fmt.Errorf("%w: node is draining", ErrShutdown)
		}
		e, ok := exports[name]
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownExport, name)
		}
		return e, nil
	}
}

func startServer(t testing.TB, exports map[string]*Export, opts ...Option) *harness {
	t.Helper()
	return startServerWith(t, NewServer(testLogger(t), mapLookup(exports), opts...), exports)
}

// startServerWith serves srv on the harness's listeners.
func startServerWith(t testing.TB, srv *Server, exports map[string]*Export) *harness {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // unix socket paths are limited to 108 bytes
		d, err := os.MkdirTemp("", "nbd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	h := &harness{
		srv:     srv,
		sock:    filepath.Join(dir, "nbd.sock"),
		exports: exports,
		errs:    make(chan error, 3),
	}
	ul, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.tcp = tl.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	for _, ln := range []net.Listener{ul, tl} {
		h.serving++
		go func() { h.errs <- h.srv.Serve(ctx, ln) }()
	}
	if h.srv.cfg.tls != nil {
		sl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		h.tlsAddr = sl.Addr().String()
		h.serving++
		go func() { h.errs <- h.srv.ServeTLS(ctx, sl) }()
	}
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop ends both Serve calls and checks they returned cleanly.
func (h *harness) stop(t testing.TB) {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	for range h.serving {
		select {
		case err := <-h.errs:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Serve did not return after cancel")
		}
	}
}

func (h *harness) uri(name string) string {
	return "nbd+unix:///" + name + "?socket=" + h.sock
}

func (h *harness) tcpURI(name string) string {
	return "nbd://" + h.tcp + "/" + name
}

// client is a minimal NBD client speaking the raw protocol.
type client struct {
	t      testing.TB
	nc     net.Conn
	br     *bufio.Reader
	size   uint64
	flags  uint16
	handle uint64
}

func dial(t testing.TB, network, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// greet reads the server greeting and answers with client flags.
func (c *client) greet(cflags uint32) {
	c.t.Helper()
	var b [18]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		c.t.Fatalf("greeting: %v", err)
	}
	if be.Uint64(b[:]) != magicNBD || be.Uint64(b[8:]) != magicIHaveOpt {
		c.t.Fatalf("bad greeting % x", b)
	}
	if f := be.Uint16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x", f)
	}
	c.write(be.AppendUint32(nil, cflags))
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) sendOption(opt uint32, data []byte) {
	c.t.Helper()
	b := be.AppendUint64(nil, magicIHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

func (c *client) optReply() optionReply {
	c.t.Helper()
	r, err := readOptionReply(c.br, 1<<20)
	if err != nil {
		c.t.Fatalf("option reply: %v", err)
	}
	return r
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and collects replies up to the
// final one, which it returns separately.
func (c *client) info(opt uint32, name string, infos ...uint16) (infoReps []optionReply, final optionReply) {
	c.t.Helper()
	c.sendOption(opt, encodeInfoRequest(infoRequest{Name: name, Infos: infos}))
	for {
		r := c.optReply()
		if r.Option != opt {
			c.t.Fatalf("reply for option %d, want %d", r.Option, opt)
		}
		if r.Type != repInfo {
			return infoReps, r
		}
		infoReps = append(infoReps, r)
		if len(r.Data) >= 12 && be.Uint16(r.Data) == infoExport {
			c.size = be.Uint64(r.Data[2:])
			c.flags = be.Uint16(r.Data[10:])
		}
	}
}

// startTLS sends NBD_OPT_STARTTLS and, on NBD_REP_ACK, runs the TLS
// handshake with cfg; from then on the client speaks through TLS. It
// returns the handshake error, or the server's first read error (TLS 1.3
// clients learn that their certificate was refused only then).
func (c *client) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	c.sendOption(optStartTLS, nil)
	if r := c.optReply(); r.Option != optStartTLS || r.Type != repAck {
		c.t.Fatalf("NBD_OPT_STARTTLS: reply %#x %q", r.Type, r.Data)
	}
	if c.br.Buffered() != 0 {
		c.t.Fatal("server sent plaintext after acknowledging NBD_OPT_STARTTLS")
	}
	tc := tls.Client(c.nc, cfg)
	c.nc, c.br = tc, bufio.NewReader(tc)
	return tc.Handshake()
}

// openTLS runs STARTTLS with cfg, then NBD_OPT_GO, and fails the test
// unless both succeed.
func openTLS(t testing.TB, addr string, cfg *tls.Config, name string) *client {
	t.Helper()
	c := dial(t, "tcp", addr)
	c.greet(flagCFixedNewstyle | flagCNoZeroes)
	if err := c.startTLS(cfg); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	_, final := c.info(optGo, name, infoBlockSize)
	if final.Type != repAck {
		t.Fatalf("NBD_OPT_GO %q: reply %#x %q", name, final.Type, final.Data)
	}
	return c
}

// open runs a whole handshake with NBD_OPT_GO and fails the test unless it
// succeeds.
func open(t testing.TB, network, addr, name string) *client {
	t.Helper()
	c := dial(t, network, addr)
	c.greet(flagCFixedNewstyle | flagCNoZeroes)
	_, final := c.info(optGo, name, infoBlockSize)
	if final.Type != repAck {
		t.Fatalf("NBD_OPT_GO %q: reply %#x %q", name, final.Type, final.Data)
	}
	return c
}

// send writes one request (and payload) and returns its handle.
func (c *client) send(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	c.t.Helper()
	c.handle++
	b := appendRequest(nil, request{Flags: flags, Type: typ, Handle: c.handle, Offset: off, Length: length})
	c.write(append(b, payload...))
	return c.handle
}

// recv reads one simple reply; dataLen is the payload to expect on success
// (the client must know it, as the simple-reply protocol requires).
func (c *client) recv(dataLen func(handle uint64) int) (simpleReply, []byte, error) {
	var b [simpleReplyLen]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return simpleReply{}, nil, err
	}
	r, err := decodeSimpleReply(b[:])
	if err != nil {
		return r, nil, err
	}
	if r.Error != 0 {
		return r, nil, nil
	}
	data := make([]byte, dataLen(r.Handle))
	_, err = io.ReadFull(c.br, data)
	return r, data, err
}

// do sends one request and waits for its reply.
func (c *client) do(typ, flags uint16, off uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	h := c.send(typ, flags, off, length, payload)
	r, data, err := c.recv(func(uint64) int {
		if typ == cmdRead {
			return int(length)
		}
		return 0
	})
	if err != nil {
		c.t.Fatalf("%s reply: %v", cmdName(typ), err)
	}
	if r.Handle != h {
		c.t.Fatalf("reply handle %d, want %d", r.Handle, h)
	}
	return r.Error, data
}

// expectClosed checks the server hung up on us.
// abort sends NBD_OPT_ABORT and expects an ACK, then the server hanging up.
func (c *client) abort() {
	c.t.Helper()
	c.sendOption(optAbort, nil)
	if r := c.optReply(); r.Type != repAck {
		c.t.Fatalf("abort reply %#x", r.Type)
	}
	c.expectClosed()
}

func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err := c.br.Read(b[:])
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
		c.t.Fatalf("connection still open: read returned %v", err)
	}
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// bytesOf makes a deterministic pattern.
func bytesOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
