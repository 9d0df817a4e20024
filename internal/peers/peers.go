package peers

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/cluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Config is what a Pool needs.
type Config struct {
	// ClientTLS is the node's mutual-TLS client identity, asked for each
	// new connection. Required.
	ClientTLS func() (*tls.Config, error)
	// Log gets the retries; nil discards them.
	Log *slog.Logger
}

// Pool keeps one gRPC connection per peer backend address. It is safe for
// concurrent use; a nil Pool is a node in no cluster.
type Pool struct {
	clientTLS func() (*tls.Config, error)
	log       *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// New returns an empty Pool; connections are made on first use.
func New(c Config) *Pool {
	p := &Pool{clientTLS: c.ClientTLS, log: c.Log, conns: map[string]*grpc.ClientConn{}}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return p
}

func errNoCluster() error {
	return status.Error(codes.FailedPrecondition, "this node is not in a cluster")
}

// Client is the peer API of the node serving the backend address addr.
func (p *Pool) Client(addr string) (tandemv1.PeerClient, error) {
	if p == nil {
		return nil, errNoCluster()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return tandemv1.NewPeerClient(c), nil
	}
	cfg, err := p.clientTLS()
	if err != nil {
		return nil, err
	}
	// A short reconnect backoff: a restarted peer must show as online again
	// within a second, not after gRPC's default of up to two minutes.
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: time.Second}))
	if err != nil {
		return nil, fmt.Errorf("dial peer %s: %w", addr, err)
	}
	p.conns[addr] = c
	return tandemv1.NewPeerClient(c), nil
}

// reconnect cuts a peer connection's reconnect backoff short and waits
// (until ctx ends) for one fresh attempt: true when it is ready. A node that
// just came back must not be reported down because an earlier failure left
// the connection backing off; a node still down fails the attempt at once
// (refused) or within the connect timeout.
func (p *Pool) reconnect(ctx context.Context, addr string) bool {
	p.mu.Lock()
	c, ok := p.conns[addr]
	p.mu.Unlock()
	if !ok {
		return false
	}
	before := c.GetState()
	c.ResetConnectBackoff()
	c.Connect()
	// A failure seen from now on is the fresh attempt's, unless the
	// connection was failing already: then what we see may be the old
	// failure, or the new one if the attempt failed before we looked (a
	// refused dial takes microseconds). gRPC's pick-first keeps a failing
	// channel in TRANSIENT_FAILURE until a connection is ready ("sticky"),
	// so a fresh attempt that fails shows no change of state at all: wait
	// for one only for a grace period.
	fresh := before != connectivity.TransientFailure
	for {
		switch s := c.GetState(); {
		case s == connectivity.Ready:
			return true
		case s == connectivity.TransientFailure && fresh:
			return false
		case s == connectivity.TransientFailure:
			wctx, cancel := context.WithTimeout(ctx, staleFailureWait)
			changed := c.WaitForStateChange(wctx, s)
			cancel()
			if !changed {
				return false // the fresh attempt failed already; backing off again
			}
			fresh = true
		default: // idle, connecting
			if s == connectivity.Connecting {
				fresh = true
			}
			if !c.WaitForStateChange(ctx, s) {
				return false
			}
		}
	}
}

// staleFailureWait is how long reconnect waits, on a connection that was
// failing already, for the fresh attempt to succeed: a failed one shows no
// change of state (see reconnect), a successful one turns it ready.
const staleFailureWait = 2 * time.Second

// dialFailed says whether err is a failure to connect, so the call never
// reached the peer and trying again cannot apply it twice.
func dialFailed(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	m := status.Convert(err).Message()
	return strings.Contains(m, "Error while dialing") || strings.Contains(m, "connection refused")
}

// Call runs f against node's peer API with a deadline of timeout. A call
// that could not connect is tried once more after a fresh connection
// attempt (at most 2 s), then its error is returned prefixed "on NODE: ".
func (p *Pool) Call(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	rec, ok := ms.Nodes[node]
	if !ok {
		return status.Errorf(codes.NotFound, "node %s is not in the cluster", node)
	}
	c, err := p.Client(rec.BackendAddr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = f(cctx, c)
	if dialFailed(err) {
		rctx, rcancel := context.WithTimeout(cctx, 2*time.Second)
		ready := p.reconnect(rctx, rec.BackendAddr)
		rcancel()
		p.log.Debug("peer call failed to connect", "node", node, "addr", rec.BackendAddr, "retry", ready, "err", err)
		if ready {
			err = f(cctx, c)
		}
	}
	if err != nil {
		return status.Errorf(status.Code(err), "on %s: %s", node, grpcMessage(err))
	}
	return nil
}

// Close closes every connection; the Pool stays usable and dials again.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// Probe pings the peers at addrs in parallel, each within timeout, as
// self, and reports by address (cluster.Config.Probe).
func (p *Pool) Probe(ctx context.Context, self string, addrs []string, timeout time.Duration) map[string]cluster.Probe {
	if p == nil {
		return nil
	}
	out := make(map[string]cluster.Probe, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			r := p.ping(ctx, self, a, timeout)
			mu.Lock()
			out[a] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (p *Pool) ping(ctx context.Context, self, addr string, timeout time.Duration) cluster.Probe {
	c, err := p.Client(addr)
	if err != nil {
		return cluster.Probe{Detail: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	// Not WaitForReady: a peer whose connection is already failing is
	// reported offline at once instead of after the whole timeout.
	resp, err := c.Ping(ctx, &tandemv1.PingRequest{From: self})
	if err != nil {
		return cluster.Probe{Detail: "no answer: " + grpcMessage(err)}
	}
	return cluster.Probe{Online: true, RTT: time.Since(start), Version: resp.GetVersion()}
}

// grpcMessage is an error's message without the status code's wording.
func grpcMessage(err error) string { return status.Convert(err).Message() }
