package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Client byte streams for seeds.

func optBytes(opt uint32, data []byte) []byte {
	b := be.AppendUint64(nil, magicIHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func reqBytes(typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
	return append(appendRequest(nil, request{Type: typ, Flags: flags, Handle: uint64(typ)<<8 | uint64(flags), Offset: off, Length: length}), payload...)
}

func stream(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func goBytes(name string, infos ...uint16) []byte {
	return optBytes(optGo, encodeInfoRequest(infoRequest{Name: name, Infos: infos}))
}

func fixedNoZeroes() []byte { return be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes) }

func FuzzRequestHeader(f *testing.F) {
	for _, r := range []request{
		{Type: cmdRead, Offset: 4096, Length: 4096},
		{Type: cmdWrite, Flags: cmdFlagFUA, Handle: 7, Offset: 1 << 20, Length: 512},
		{Type: cmdWriteZeroes, Flags: cmdFlagNoHole | cmdFlagFUA, Length: 1 << 30},
		{Type: cmdTrim, Offset: ^uint64(0), Length: ^uint32(0)},
		{Type: cmdFlush, Offset: 1, Length: 1},
		{Type: cmdDisc},
		{Type: cmdCache, Length: 1},
		{Type: 99, Flags: 0xffff},
	} {
		f.Add(appendRequest(nil, r))
	}
	f.Add([]byte{0x25, 0x60, 0x95})
	f.Add(make([]byte, requestHeaderLen))

	const size = 1 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRequest(b)
		if err != nil {
			if len(b) >= requestHeaderLen && be.Uint32(b) == magicRequest {
				t.Fatalf("well-formed header rejected: %v", err)
			}
			return
		}
		if enc := appendRequest(nil, req); !bytes.Equal(enc, b[:requestHeaderLen]) {
			t.Fatalf("round trip: % x != % x", enc, b[:requestHeaderLen])
		}
		for _, ro := range []bool{false, true} {
			c := &conn{exp: &export{size: size, readOnly: ro, maxBlock: 64 << 10}}
			errno := c.check(req)
			if errno == 0 {
				mutates := req.Type == cmdWrite || req.Type == cmdTrim || req.Type == cmdWriteZeroes
				switch {
				case ro && mutates:
					t.Fatalf("%s accepted on a read-only export", cmdName(req.Type))
				case req.Type != cmdFlush && (req.Offset > size || uint64(req.Length) > size-req.Offset):
					t.Fatalf("%s out of range accepted: %+v", cmdName(req.Type), req)
				case req.Type == cmdRead && (req.Length == 0 || req.Length > 64<<10):
					t.Fatalf("read of %d bytes accepted", req.Length)
				case req.Flags&^(cmdFlagFUA|cmdFlagNoHole) != 0:
					t.Fatalf("unknown flags accepted: %#x", req.Flags)
				}
			}
			_ = c.trivial(req)
		}
	})
}

// FuzzOptionNegotiation feeds arbitrary client bytes to the server side of
// a connection. The server must neither panic nor hang, and every change to
// a volume must be backed by a well-formed request for it in the input.
func FuzzOptionNegotiation(f *testing.F) {
	f.Add(stream(fixedNoZeroes(), goBytes("fz", infoBlockSize),
		reqBytes(cmdWrite, 0, 0, 5, []byte("hello")),
		reqBytes(cmdRead, 0, 0, 5, nil),
		reqBytes(cmdWrite, cmdFlagFUA, 4096, 3, []byte("fua")),
		reqBytes(cmdFlush, 0, 0, 0, nil),
		reqBytes(cmdTrim, cmdFlagFUA, 512, 512, nil),
		reqBytes(cmdWriteZeroes, cmdFlagNoHole, 8192, 1024, nil),
		reqBytes(cmdCache, 0, 0, 4096, nil),
		reqBytes(cmdDisc, 0, 0, 0, nil)))
	f.Add(stream(be.AppendUint32(nil, flagCFixedNewstyle), optBytes(optExportName, []byte("fz")),
		reqBytes(cmdWrite, 0, 100, 4, []byte("abcd")),
		reqBytes(cmdWrite, 0, 64<<10-2, 4, []byte("over")),
		reqBytes(cmdRead, 0, 0, 0, nil)))
	f.Add(stream(be.AppendUint32(nil, 0), optBytes(optExportName, []byte("fz")), reqBytes(cmdWrite, 0, 0, 1, []byte("x"))))
	f.Add(stream(fixedNoZeroes(),
		optBytes(optInfo, encodeInfoRequest(infoRequest{Name: "fz", Infos: []uint16{infoName, infoDescription}})),
		optBytes(optList, nil),
		optBytes(optStructuredReply, nil),
		optBytes(optStartTLS, nil),
		optBytes(0x77, []byte("junk")),
		goBytes("nope"),
		goBytes("ro"),
		reqBytes(cmdWrite, 0, 0, 2, []byte("ro")),
		reqBytes(cmdTrim, 0, 0, 512, nil)))
	f.Add(stream(fixedNoZeroes(), optBytes(optGo, []byte{0, 0, 0, 200, 1}), optBytes(optAbort, nil)))
	f.Add(stream(fixedNoZeroes(), goBytes("fz"), []byte{0x25, 0x60, 0x95, 0x14}, reqBytes(cmdWrite, 0, 0, 4, []byte("evil"))))
	f.Add(stream(fixedNoZeroes(), goBytes("fz"), reqBytes(cmdWrite, 0, 0, 1<<20, []byte("short"))))
	f.Add([]byte("NBDMAGIC IHAVEOPT garbage"))

	f.Fuzz(func(t *testing.T, in []byte) { fuzzConn(t, in) })
}

// fuzzConn serves one connection whose client sends in, then checks the
// volumes; it returns the writable one.
func fuzzConn(t *testing.T, in []byte) *memVolume {
	fz, ro := newMemVolume(64<<10), newMemVolume(64<<10)
	exports := map[string]*Export{
		"fz": {Volume: fz, Description: "fuzz", MaxBlock: 32 << 10},
		"ro": {Volume: ro, ReadOnly: true},
	}
	srv := NewServer(testLogger(t), mapLookup(exports), WithHandshakeTimeout(2*time.Second),
		WithMaxInflight(4), WithShutdownGrace(time.Second),
		WithList(func(context.Context) ([]ListEntry, error) { return []ListEntry{{Name: "fz"}}, nil }))
	// Replies go through a net.Pipe (with deadlines) to a reader that drops
	// them; the server reads the input directly and then sees EOF, so it
	// processes all of it, as from a client that sends and half-closes.
	cli, end := net.Pipe()
	defer cli.Close()
	go io.Copy(io.Discard, cli)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.serveConn(context.Background(), scriptedConn{Conn: end, in: bytes.NewReader(in)}, nil)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not finish the connection")
	}
	if n := ro.mutations(); n != 0 {
		t.Fatalf("read-only volume changed %d times", n)
	}
	for _, w := range fz.records() {
		if !backedByRequest(in, w) {
			t.Fatalf("volume changed without a well-formed request: %s at %d+%d", cmdName(w.op), w.off, w.len)
		}
	}
	return fz
}

// FuzzTLSNegotiation feeds arbitrary client bytes to a connection that
// requires TLS: pre is the plaintext part, post what the client sends once
// the server consumed pre (the TLS handshake, if pre ends with
// NBD_OPT_STARTTLS). Without a client key no input can pass the handshake,
// so the server must answer nothing but NBD_REP_ERR_TLS_REQD (or ACK for
// ABORT and STARTTLS) before TLS, never call the Lookup, and never touch a
// volume.
func FuzzTLSNegotiation(f *testing.F) {
	ca := newTestCA(f, "fuzz CA")
	cfg := serverTLS(ca, ca.issue(f, "node", true))
	starttls := optBytes(optStartTLS, nil)
	// No real ClientHello among the seeds: it is random per process, which
	// makes the fuzzer see new coverage and spend its time minimizing 1.5 KB
	// of it. TestFuzzTLSHarness runs one through this harness instead.
	f.Add(stream(fixedNoZeroes(), starttls), []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00})
	f.Add(stream(fixedNoZeroes(), optBytes(optList, nil), goBytes("fz", infoBlockSize),
		optBytes(optInfo, encodeInfoRequest(infoRequest{Name: "fz"})), optBytes(0x4242, []byte("x")), starttls),
		[]byte("garbage"))
	f.Add(stream(fixedNoZeroes(), optBytes(optStartTLS, []byte("data")), starttls), []byte{0x16, 0x03, 0x01, 0xff, 0xff})
	f.Add(stream(fixedNoZeroes(), starttls, goBytes("fz"), reqBytes(cmdWrite, 0, 0, 4, []byte("evil"))), []byte(nil))
	f.Add(stream(fixedNoZeroes(), optBytes(optExportName, []byte("fz")), reqBytes(cmdWrite, 0, 0, 4, []byte("evil"))), []byte(nil))
	f.Add(stream(be.AppendUint32(nil, 0), optBytes(optExportName, []byte("fz"))), []byte(nil))
	f.Add(stream(fixedNoZeroes(), optBytes(optAbort, nil)), []byte(nil))
	f.Fuzz(func(t *testing.T, pre, post []byte) { fuzzTLSConn(t, cfg, pre, post) })
}

func fuzzTLSConn(t *testing.T, cfg *tls.Config, pre, post []byte) Stats {
	vol := newMemVolume(64 << 10)
	var lookups atomic.Int32
	lookup := func(ctx context.Context, name string) (*Export, error) {
		lookups.Add(1)
		return &Export{Volume: vol}, nil
	}
	srv := NewServer(testLogger(t), lookup, WithTLS(cfg), WithHandshakeTimeout(2*time.Second), WithShutdownGrace(time.Second),
		WithList(func(context.Context) ([]ListEntry, error) { return []ListEntry{{Name: "fz"}}, nil }))
	cli, end := net.Pipe()
	defer cli.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { defer close(copied); io.Copy(&out, cli) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// io.MultiReader returns post only once pre is consumed.
		in := io.MultiReader(bytes.NewReader(pre), bytes.NewReader(post))
		srv.serveConn(context.Background(), scriptedConn{Conn: end, in: in}, cfg)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not finish the connection")
	}
	<-copied
	if n := lookups.Load(); n != 0 || vol.mutations() != 0 {
		t.Fatalf("lookups %d, volume changes %d without TLS", n, vol.mutations())
	}
	checkPlaintextReplies(t, out.Bytes())
	return srv.Stats()
}

// checkPlaintextReplies parses what the server sent before TLS: the
// greeting, then option replies, none of which may serve anything.
func checkPlaintextReplies(t *testing.T, b []byte) {
	if len(b) < 18 {
		return
	}
	for b = b[18:]; len(b) >= 20; {
		r, err := readOptionReply(bytes.NewReader(b), maxStringLen)
		if err != nil {
			t.Fatalf("malformed plaintext reply: %v", err)
		}
		b = b[20+len(r.Data):]
		ok := false
		switch r.Option {
		case optStartTLS:
			if r.Type == repAck {
				return // the rest is TLS
			}
			ok = r.Type == repErrInvalid || r.Type == repErrTooBig
		case optAbort:
			ok = r.Type == repAck
		default:
			ok = r.Type == repErrTLSReqd
		}
		if !ok {
			t.Fatalf("reply %#x to %s before TLS", r.Type, optName(r.Option))
		}
	}
	if len(b) != 0 {
		t.Fatalf("%d stray bytes after the plaintext replies", len(b))
	}
}

// clientHello captures the first flight of a TLS client with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	a, b := net.Pipe()
	defer a.Close()
	go tls.Client(a, cfg).Handshake() // fails once b is closed
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	b.Close()
	if err != nil {
		t.Fatalf("capture ClientHello: %v", err)
	}
	return buf[:n]
}

// TestFuzzTLSHarness checks the TLS fuzz harness sees the refusals it
// checks, and that a script cannot get past the handshake.
func TestFuzzTLSHarness(t *testing.T) {
	ca := newTestCA(t, "fuzz CA")
	cfg := serverTLS(ca, ca.issue(t, "node", true))
	hello := clientHello(t, clientTLS(ca, ca.issue(t, "client", false, "fz")))
	st := fuzzTLSConn(t, cfg, stream(fixedNoZeroes(), optBytes(optList, nil), goBytes("fz"), optBytes(optStartTLS, nil)), hello)
	if st.TLSRequired != 2 || st.TLSHandshakeErrors != 1 {
		t.Fatalf("the script did not reach the TLS handshake: %+v", st)
	}
}

// TestFuzzHarness checks the harness can reach the volume at all, so a
// fuzz run that finds nothing means something.
func TestFuzzHarness(t *testing.T) {
	fz := fuzzConn(t, stream(fixedNoZeroes(), goBytes("fz"),
		reqBytes(cmdWrite, 0, 0, 5, []byte("hello")),
		reqBytes(cmdTrim, 0, 512, 512, nil),
		reqBytes(cmdWriteZeroes, 0, 1024, 512, nil),
		reqBytes(cmdDisc, 0, 0, 0, nil)))
	if recs := fz.records(); len(recs) != 3 || string(fz.data[:5]) != "hello" {
		t.Fatalf("volume saw %+v", recs)
	}
}

// scriptedConn reads from a script instead of its peer.
type scriptedConn struct {
	net.Conn
	in io.Reader
}

func (c scriptedConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// backedByRequest reports whether in holds a request header for w (and,
// for a write, its payload right behind it).
func backedByRequest(in []byte, w writeRec) bool {
	magic := be.AppendUint32(nil, magicRequest)
	for i := 0; i+requestHeaderLen <= len(in); i++ {
		if !bytes.Equal(in[i:i+4], magic) {
			continue
		}
		r, err := decodeRequest(in[i:])
		if err != nil || r.Type != w.op || r.Offset != uint64(w.off) || int64(r.Length) != w.len {
			continue
		}
		if w.op != cmdWrite {
			return true
		}
		p := in[i+requestHeaderLen:]
		if int64(len(p)) >= w.len && bytes.Equal(p[:w.len], w.data) {
			return true
		}
	}
	return false
}
