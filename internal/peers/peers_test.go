package peers

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestReconnectCutsBackoffShort: reconnect gives up by itself on a peer
// that refuses, whether the connection was new or failing already, and
// reaches a peer that is back without waiting out the backoff. There is no
// deadline: the properties are "returns at all" and "connects", not how
// fast a loaded machine is. Before the fix, a refused attempt that failed
// before reconnect looked (a refused dial takes microseconds), and every
// attempt on a connection that was failing already (gRPC keeps a failing
// channel in TRANSIENT_FAILURE, "sticky"), made reconnect wait for a change
// of state that never came: this test hung.
func TestReconnectCutsBackoffShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the peer is down
	bo := backoff.DefaultConfig
	bo.BaseDelay, bo.MaxDelay = 10*time.Minute, 10*time.Minute // waiting it out would outlast the test binary's timeout
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	p := &Pool{conns: map[string]*grpc.ClientConn{addr: cc}}
	ctx := context.Background()

	// A new (idle) connection: its fresh attempt is refused.
	if p.reconnect(ctx, addr) {
		t.Fatal("reconnected to a peer that is down")
	}
	// Now the connection is failing and backing off for ten minutes.
	if s := cc.GetState(); s != connectivity.TransientFailure {
		t.Fatalf("connection to a refusing peer is %s, want TRANSIENT_FAILURE", s)
	}
	if p.reconnect(ctx, addr) {
		t.Fatal("reconnected to a peer that is still down")
	}

	ln, err = net.Listen("tcp", addr) // the peer is back
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	srv := grpc.NewServer()
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	// Each try resets the backoff; a slow machine may need more than one
	// (the grace for a failing connection), none waits out ten minutes.
	for tries := 1; !p.reconnect(ctx, addr); tries++ {
		t.Logf("peer back, try %d: not ready yet", tries)
	}
	if s := cc.GetState(); s != connectivity.Ready {
		t.Errorf("after reconnect the connection is %s", s)
	}
}

func TestDialFailed(t *testing.T) {
	for err, want := range map[error]bool{
		status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.2:7400: connect: connection refused"`): true,
		status.Error(codes.Unavailable, "no quorum"):            false,
		status.Error(codes.Unavailable, "transport is closing"): false, // the call may have reached the peer
		status.Error(codes.Internal, "connection refused"):      false,
		nil: false,
	} {
		if got := dialFailed(err); got != want {
			t.Errorf("dialFailed(%v) = %v, want %v", err, got, want)
		}
	}
}

// node is a peer's TLS identity signed by ca.
func node(t *testing.T, ca *pki.CA, name string) (cert, key []byte) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = ca.SignNode(csr, name, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// pinger is a peer's backend API that answers Ping.
type pinger struct {
	tandemv1.UnimplementedPeerServer
	pings atomic.Int32
}

func (p *pinger) Ping(context.Context, *tandemv1.PingRequest) (*tandemv1.PingResponse, error) {
	p.pings.Add(1)
	return &tandemv1.PingResponse{Version: "v9"}, nil
}

// world is node n1's Pool and a running peer n2 over mutual TLS, plus the
// backend address of a peer n3 that is down.
type world struct {
	pool           *Pool
	n2             *pinger
	ms             *consensus.MetaState
	n2Addr, n3Addr string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ca, err := pki.NewCA("lab", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey := node(t, ca, "n2")
	srvTLS, err := pki.ServerTLS(srvCert, srvKey, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)))
	p := &pinger{}
	tandemv1.RegisterPeerServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n3 := down.Addr().String()
	down.Close()

	cliCert, cliKey := node(t, ca, "n1")
	pool := New(Config{ClientTLS: func() (*tls.Config, error) { return pki.ClientTLS(cliCert, cliKey, ca.CertPEM()) }})
	t.Cleanup(pool.Close)
	ms := &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{
		"n2": {Name: "n2", BackendAddr: ln.Addr().String()},
		"n3": {Name: "n3", BackendAddr: n3},
	}}
	return &world{pool: pool, n2: p, ms: ms, n2Addr: ln.Addr().String(), n3Addr: n3}
}

// Probe reports the peer that answers over mutual TLS as online with its
// version, and the one that is down as offline with the reason.
func TestProbe(t *testing.T) {
	w := newWorld(t)
	got := w.pool.Probe(context.Background(), "n1", []string{w.n2Addr, w.n3Addr}, 2*time.Second)
	if p := got[w.n2Addr]; !p.Online || p.Version != "v9" || p.RTT <= 0 {
		t.Errorf("n2: %+v, want online with version v9", p)
	}
	if p := got[w.n3Addr]; p.Online || !strings.HasPrefix(p.Detail, "no answer: ") {
		t.Errorf("n3: %+v, want offline with a reason", p)
	}
	if len(got) != 2 || w.n2.pings.Load() != 1 {
		t.Errorf("probes: %v, n2 pinged %d times", got, w.n2.pings.Load())
	}
}

// The pool's identity is checked by the peer: a client certificate of
// another CA gets no answer.
func TestProbeNeedsTheClusterCA(t *testing.T) {
	w := newWorld(t)
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key := node(t, other, "n1")
	w.pool = New(Config{ClientTLS: func() (*tls.Config, error) { return pki.ClientTLS(cert, key, other.CertPEM()) }})
	defer w.pool.Close()
	if p := w.pool.Probe(context.Background(), "n1", []string{w.n2Addr}, 2*time.Second)[w.n2Addr]; p.Online || w.n2.pings.Load() != 0 {
		t.Errorf("a peer of another CA answered: %+v", p)
	}
}

func TestCall(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ping := func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.Ping(ctx, &tandemv1.PingRequest{From: "n1"})
		return err
	}
	if err := w.pool.Call(ctx, w.ms, "n2", time.Second, ping); err != nil {
		t.Fatalf("call n2: %v", err)
	}
	if err := w.pool.Call(ctx, w.ms, "n9", time.Second, ping); status.Code(err) != codes.NotFound {
		t.Errorf("call a node not in the cluster: %v", err)
	}
	err := w.pool.Call(ctx, w.ms, "n2", time.Second, func(context.Context, tandemv1.PeerClient) error {
		return status.Error(codes.Aborted, "busy")
	})
	if status.Code(err) != codes.Aborted || status.Convert(err).Message() != "on n2: busy" {
		t.Errorf("a peer's refusal: %v, want Aborted \"on n2: busy\"", err)
	}
	err = w.pool.Call(ctx, w.ms, "n3", time.Second, ping)
	if status.Code(err) != codes.Unavailable || !strings.HasPrefix(status.Convert(err).Message(), "on n3: ") {
		t.Errorf("a peer that is down: %v", err)
	}
	var none *Pool
	if err := none.Call(ctx, w.ms, "n2", time.Second, ping); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("outside a cluster: %v", err)
	}
}

// A call that failed to connect is tried once more; one that may have
// reached the peer is not.
func TestCallRetriesOnlyDialFailures(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, tc := range []struct {
		first error
		calls int
	}{
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp: connect: connection refused\""), 2},
		{status.Error(codes.Unavailable, "transport is closing"), 1},
	} {
		calls := 0
		err := w.pool.Call(ctx, w.ms, "n2", 5*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			calls++
			if calls == 1 {
				return tc.first
			}
			_, err := c.Ping(ctx, &tandemv1.PingRequest{From: "n1"})
			return err
		})
		if calls != tc.calls {
			t.Errorf("after %v: %d calls, want %d", tc.first, calls, tc.calls)
		}
		if (tc.calls == 2) != (err == nil) {
			t.Errorf("after %v: %v", tc.first, err)
		}
	}
}
