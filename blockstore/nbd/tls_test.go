package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsFixture is a server whose ServeTLS listener trusts ca, with exports
// "a" and "b", an alias of "a", and the harness's refusing names; it
// counts the lookups per name so tests can check a refused client never
// reached one.
type tlsFixture struct {
	*harness
	ca                   *testCA
	volA, volB           *memVolume
	certA, certB, certAB *testCert

	mu         sync.Mutex
	lookups    map[string]int
	tlsLookups atomic.Int32 // lookups that saw the client's TLS state
}

const aliasOfA = "alias-a"

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{ca: newTestCA(t, "test cluster CA"), volA: newMemVolume(4 << 20), volB: newMemVolume(1 << 20), lookups: map[string]int{}}
	f.certA = f.ca.issue(t, "consumer-a", false, "a", aliasOfA)
	f.certB = f.ca.issue(t, "consumer-b", false, "b")
	f.certAB = f.ca.issue(t, "consumer-ab", false, "a", "b", notPrimary, "nope")
	exports := map[string]*Export{
		"a": {Name: "a", Volume: f.volA, MultiConn: true},
		"b": {Name: "b", Volume: f.volB},
	}
	base := mapLookup(exports)
	lookup := func(ctx context.Context, name string) (*Export, error) {
		f.mu.Lock()
		f.lookups[name]++
		f.mu.Unlock()
		if st, ok := ClientTLS(ctx); ok {
			f.tlsLookups.Add(1)
			if len(st.VerifiedChains) == 0 {
				return nil, errors.New("lookup for an unverified TLS client")
			}
		}
		if name == aliasOfA {
			name = "a"
		}
		return base(ctx, name)
	}
	srvCert := f.ca.issue(t, "node1", true)
	opts := []Option{
		WithTLS(serverTLS(f.ca, srvCert)),
		WithAuthorize(ouAuthorize),
		WithHandshakeTimeout(10 * time.Second),
		WithList(func(context.Context) ([]ListEntry, error) {
			return []ListEntry{{Name: "a"}, {Name: "b", Description: "volume b"}, {Name: notPrimary}}, nil
		}),
	}
	f.harness = startServerWith(t, NewServer(testLogger(t), lookup, opts...), exports)
	return f
}

func (f *tlsFixture) lookupsOf(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[name]
}

// refused checks the client cannot get anything once the TLS handshake
// ran with cfg: either the handshake fails, or (TLS 1.3, where the client
// finishes before the server checked its certificate) the first option
// gets no reply.
func refused(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	c := dial(t, "tcp", addr)
	c.greet(flagCFixedNewstyle | flagCNoZeroes)
	err := c.startTLS(cfg)
	if err == nil {
		c.sendOption(optList, nil)
		var r optionReply
		r, err = readOptionReply(c.br, 1<<20)
		if err == nil {
			t.Fatalf("option answered over a TLS session that should have been refused: %#x %q", r.Type, r.Data)
		}
	}
	t.Logf("refused: %v", err)
}

func TestTLSRefusesStrangers(t *testing.T) {
	f := newTLSFixture(t)
	other := newTestCA(t, "another cluster")
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no certificate", clientTLS(f.ca, nil)},
		{"self-signed", clientTLS(f.ca, selfSigned(t, "consumer-a", "a"))},
		{"another CA", clientTLS(f.ca, other.issue(t, "consumer-a", false, "a"))},
		{"server certificate of another CA", clientTLS(f.ca, other.issue(t, "node1", true))},
	} {
		t.Run(tc.name, func(t *testing.T) { refused(t, f.tlsAddr, tc.cfg) })
	}
	// The client may see the alert before the server counted the failure.
	waitFor(t, "refusals counted", func() bool { return f.srv.Stats().HandshakeFailures == 4 })
	if s := f.srv.Stats(); s.TLSHandshakeErrors != 4 || s.Connections != 4 || s.ActiveConnections != 0 {
		t.Fatalf("stats %+v", s)
	}
	if len(f.lookups) != 0 || f.volA.mutations() != 0 {
		t.Fatalf("a refused client reached a lookup %v or a volume", f.lookups)
	}
}

func TestTLSRequiredBeforeStartTLS(t *testing.T) {
	f := newTLSFixture(t)
	t.Run("every option but STARTTLS and ABORT", func(t *testing.T) {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle | flagCNoZeroes)
		for _, o := range []struct {
			opt  uint32
			data []byte
		}{
			{optList, nil},
			{optInfo, encodeInfoRequest(infoRequest{Name: "a"})},
			{optGo, encodeInfoRequest(infoRequest{Name: "a", Infos: []uint16{infoBlockSize}})},
			{optGo, encodeInfoRequest(infoRequest{Name: notPrimary})},
			{optStructuredReply, nil},
			{optSetMetaContext, make([]byte, 8)},
			{0x4242, []byte("xyz")},
			{0x4242, make([]byte, maxOptionLen+1)},
			{optGo, []byte{1, 2, 3}}, // malformed: not even decoded
		} {
			c.sendOption(o.opt, o.data)
			r := c.optReply()
			if r.Option != o.opt || r.Type != repErrTLSReqd || strings.Contains(string(r.Data), "primary") {
				t.Fatalf("option %s: reply %#x %q, want NBD_REP_ERR_TLS_REQD", optName(o.opt), r.Type, r.Data)
			}
		}
		// The same connection upgrades, and only then sees its export.
		if err := c.startTLS(clientTLS(f.ca, f.certA)); err != nil {
			t.Fatal(err)
		}
		if _, final := c.info(optGo, "a"); final.Type != repAck {
			t.Fatalf("GO after STARTTLS: %#x %q", final.Type, final.Data)
		}
		if e, _ := c.do(cmdWrite, 0, 0, 3, []byte("tls")); e != 0 {
			t.Fatalf("write errno %d", e)
		}
	})
	t.Run("EXPORT_NAME hangs up", func(t *testing.T) {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle | flagCNoZeroes)
		c.sendOption(optExportName, []byte("a"))
		c.expectClosed()
	})
	t.Run("EXPORT_NAME without fixed newstyle hangs up", func(t *testing.T) {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(0)
		c.sendOption(optExportName, []byte("a"))
		c.expectClosed()
	})
	t.Run("ABORT", func(t *testing.T) {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle)
		c.abort()
	})
	t.Run("STARTTLS with data", func(t *testing.T) {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle | flagCNoZeroes)
		c.sendOption(optStartTLS, []byte("x"))
		if r := c.optReply(); r.Type != repErrInvalid {
			t.Fatalf("reply %#x", r.Type)
		}
		if err := c.startTLS(clientTLS(f.ca, f.certA)); err != nil {
			t.Fatal(err)
		}
		c.sendOption(optStartTLS, nil)
		if r := c.optReply(); r.Type != repErrInvalid {
			t.Fatalf("second STARTTLS: reply %#x, want NBD_REP_ERR_INVALID", r.Type)
		}
	})
	t.Run("plaintext behind STARTTLS", func(t *testing.T) {
		// An attacker on the path appends an option to STARTTLS; the server
		// must not read it as if it came through TLS.
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle | flagCNoZeroes)
		c.write(append(optBytes(optStartTLS, nil), goBytes("a")...))
		c.expectClosed()
	})
	if f.lookupsOf("a") != 1 || f.lookupsOf(notPrimary) != 0 {
		t.Fatalf("lookups before TLS: %v", f.lookups)
	}
	if s := f.srv.Stats(); s.TLSRequired < 11 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTLSAuthorization(t *testing.T) {
	f := newTLSFixture(t)
	list := func(c *client) []string {
		t.Helper()
		c.sendOption(optList, nil)
		var names []string
		for {
			r := c.optReply()
			if r.Type != repServer {
				if r.Type != repAck {
					t.Fatalf("LIST: %#x %q", r.Type, r.Data)
				}
				return names
			}
			names = append(names, string(r.Data[4:4+be.Uint32(r.Data)]))
		}
	}
	tlsClient := func(cert *testCert) *client {
		c := dial(t, "tcp", f.tlsAddr)
		c.greet(flagCFixedNewstyle | flagCNoZeroes)
		if err := c.startTLS(clientTLS(f.ca, cert)); err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("own export", func(t *testing.T) {
		c := tlsClient(f.certA)
		if got := list(c); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("LIST shows %q", got)
		}
		if _, final := c.info(optGo, "a", infoBlockSize); final.Type != repAck || c.size != 4<<20 {
			t.Fatalf("GO: %#x %q", final.Type, final.Data)
		}
		want := bytesOf(8192, 3)
		if e, _ := c.do(cmdWrite, cmdFlagFUA, 4096, 8192, want); e != 0 {
			t.Fatalf("write errno %d", e)
		}
		if e, got := c.do(cmdRead, 0, 4096, 8192, nil); e != 0 || !bytes.Equal(got, want) {
			t.Fatalf("read back errno %d", e) // one TLS record with its header
		}
		big := bytesOf(maxCoalesce+1, 5)
		if e, _ := c.do(cmdWrite, 0, 1<<20, uint32(len(big)), big); e != 0 {
			t.Fatalf("write errno %d", e)
		}
		if e, got := c.do(cmdRead, 0, 1<<20, uint32(len(big)), nil); e != 0 || !bytes.Equal(got, big) {
			t.Fatalf("read back errno %d", e) // header and data written apart
		}
		c.send(cmdDisc, 0, 0, 0, nil)
		c.expectClosed()
	})

	t.Run("EXPORT_NAME over TLS", func(t *testing.T) {
		c := tlsClient(f.certA)
		c.sendOption(optExportName, []byte("a"))
		var b [10]byte // size and flags, no zeroes
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			t.Fatal(err)
		}
		if e, got := c.do(cmdRead, 0, 4096, 3, nil); e != 0 || len(got) != 3 {
			t.Fatalf("read errno %d", e)
		}
	})

	t.Run("another consumer's export", func(t *testing.T) {
		c := tlsClient(f.certB)
		if got := list(c); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("LIST shows %q", got)
		}
		// Refused exactly like a name that does not exist, and the lookup
		// (whose text can name the primary) is never asked.
		var msgs []string
		for _, name := range []string{"a", notPrimary, "nope", aliasOfA} {
			for _, opt := range []uint32{optInfo, optGo} {
				reps, final := c.info(opt, name)
				if len(reps) != 0 || final.Type != repErrUnknown {
					t.Fatalf("%s %q: %d infos, final %#x %q", optName(opt), name, len(reps), final.Type, final.Data)
				}
				msgs = append(msgs, strings.Replace(string(final.Data), name, "NAME", 1))
			}
		}
		for _, m := range msgs {
			if m != msgs[0] || strings.Contains(m, "primary") {
				t.Fatalf("refusals differ or leak: %q", msgs)
			}
		}
		if _, final := c.info(optGo, "b"); final.Type != repAck {
			t.Fatalf("GO b: %#x %q", final.Type, final.Data)
		}
		if e, _ := c.do(cmdWrite, 0, 0, 1, []byte("b")); e != 0 {
			t.Fatalf("write errno %d", e)
		}
	})

	t.Run("another consumer's export by EXPORT_NAME", func(t *testing.T) {
		c := tlsClient(f.certB)
		c.sendOption(optExportName, []byte("a"))
		c.expectClosed()
	})

	t.Run("an alias does not widen", func(t *testing.T) {
		// certA covers "alias-a" and "a"; certB covers neither. An alias
		// resolving to an export the certificate does not cover is refused
		// after the lookup, before anything is opened.
		c := tlsClient(f.ca.issue(t, "alias-only", false, aliasOfA))
		if _, final := c.info(optGo, aliasOfA); final.Type != repErrUnknown {
			t.Fatalf("GO %s: %#x %q", aliasOfA, final.Type, final.Data)
		}
		c2 := tlsClient(f.certA)
		if _, final := c2.info(optGo, aliasOfA); final.Type != repAck {
			t.Fatalf("GO %s with a certificate for a: %#x %q", aliasOfA, final.Type, final.Data)
		}
	})

	t.Run("authorized lookup error keeps its text", func(t *testing.T) {
		c := tlsClient(f.certAB)
		if got := list(c); !slices.Equal(got, []string{"a", "b", notPrimary}) {
			t.Fatalf("LIST shows %q", got)
		}
		_, final := c.info(optInfo, notPrimary)
		if final.Type != repErrUnknown || !strings.Contains(string(final.Data), "not the primary") {
			t.Fatalf("final %#x %q", final.Type, final.Data)
		}
	})

	if f.lookupsOf("a") != 2 || f.lookupsOf(notPrimary) != 1 || f.lookupsOf("nope") != 0 || f.lookupsOf(aliasOfA) != 2 {
		t.Fatalf("lookups %v", f.lookups)
	}
	total := 0
	for _, n := range f.lookups {
		total += n
	}
	if n := f.tlsLookups.Load(); int(n) != total {
		t.Fatalf("%d of %d lookups saw the client's TLS state", n, total)
	}
	if d := f.volA.data[:1]; d[0] != 0 || f.volB.data[0] != 'b' {
		t.Fatal("volumes hold unexpected data")
	}
	if s := f.srv.Stats(); s.Unauthorized == 0 || s.TLSHandshakeErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTLSPlainListenerUnchanged: WithTLS changes only ServeTLS listeners;
// the unix socket (the VMs' path) stays plain and unfiltered.
func TestTLSPlainListenerUnchanged(t *testing.T) {
	f := newTLSFixture(t)
	c := dial(t, "unix", f.sock)
	c.greet(flagCFixedNewstyle | flagCNoZeroes)
	c.sendOption(optStartTLS, nil)
	if r := c.optReply(); r.Type != repErrUnsup {
		t.Fatalf("STARTTLS on the plain listener: %#x", r.Type)
	}
	if _, final := c.info(optGo, "a"); final.Type != repAck {
		t.Fatalf("GO: %#x %q", final.Type, final.Data)
	}
	if n := f.tlsLookups.Load(); n != 0 {
		t.Fatalf("a plain client's lookup saw TLS state (%d)", n)
	}
}

// nodeTLS is serverTLS for a node certificate from a fresh CA, with
// client certificates handled as auth says.
func nodeTLS(t *testing.T, auth tls.ClientAuthType) (*testCA, *tls.Config) {
	ca := newTestCA(t, "ca")
	cfg := serverTLS(ca, ca.issue(t, "node", true))
	cfg.ClientAuth = auth
	return ca, cfg
}

func TestServeTLSConfig(t *testing.T) {
	_, weak := nodeTLS(t, tls.VerifyClientCertIfGiven)
	_, noCert := nodeTLS(t, tls.RequireAndVerifyClientCert)
	noCert.Certificates = nil
	for name, opts := range map[string][]Option{
		"without WithTLS":             nil,
		"client certificate optional": {WithTLS(weak)},
		"no server certificate":       {WithTLS(noCert)},
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = NewServer(testLogger(t), nil, opts...).ServeTLS(context.Background(), ln)
			if !errors.Is(err, ErrTLSConfig) {
				t.Fatalf("ServeTLS: %v", err)
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener left open: %v", err)
			}
		})
	}
}

// TestTLSGetConfigForClient: a configuration handed out per connection
// (how certificates rotate without a restart) is held to the same rule,
// at the handshake: no verified client certificate, no service.
func TestTLSGetConfigForClient(t *testing.T) {
	ca, lax := nodeTLS(t, tls.RequestClientCert)
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return lax, nil }}
	h := startServerWith(t, NewServer(testLogger(t), mapLookup(map[string]*Export{"a": {Volume: newMemVolume(1 << 20)}}), WithTLS(cfg)), nil)
	refused(t, h.tlsAddr, clientTLS(ca, nil))
	refused(t, h.tlsAddr, clientTLS(ca, selfSigned(t, "x", "a")))
	waitFor(t, "refusals counted", func() bool { return h.srv.Stats().HandshakeFailures == 2 })
	if s := h.srv.Stats(); s.TLSHandshakeErrors != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTLSPipelined: replies written by several workers at once, and a
// reader parsing requests meanwhile, through one TLS session; then a
// server shutdown with the session open.
func TestTLSPipelined(t *testing.T) {
	f := newTLSFixture(t)
	f.volA.delay.Store(int64(time.Millisecond))
	c := openTLS(t, f.tlsAddr, clientTLS(f.ca, f.certA), "a")
	const n = 200
	errs := make(chan error, 1)
	got := make(map[uint64][]byte)
	go func() {
		for range 2 * n {
			r, data, err := c.recv(func(h uint64) int {
				if h > n {
					return 4096 << (h % 3) // reads: 4, 8 or 16 KiB, some coalesced, some not
				}
				return 0
			})
			if err == nil && r.Error != 0 {
				err = fmt.Errorf("reply %+v", r)
			}
			if err != nil {
				errs <- err
				return
			}
			got[r.Handle] = data
		}
		errs <- nil
	}()
	for i := range n {
		c.send(cmdWrite, 0, uint64(i)*16384, 16384, bytesOf(16384, byte(i)))
	}
	for i := range n {
		h := uint64(n + 1 + i)
		c.send(cmdRead, 0, uint64(i)*16384, uint32(4096<<(h%3)), nil)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		h := uint64(n + 1 + i)
		if want := bytesOf(16384, byte(i))[:4096<<(h%3)]; !bytes.Equal(got[h], want) {
			t.Fatalf("read %d returned other data", i)
		}
	}
	f.stop(t)
	c.expectClosed()
}
