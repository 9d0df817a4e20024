package daemon

import (
	"context"
	"fmt"
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

// peerPool keeps one gRPC connection per peer backend address.
type peerPool struct {
	d     *Daemon
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerPool(d *Daemon) *peerPool {
	return &peerPool{d: d, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerPool) client(addr string) (tandemv1.PeerClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return tandemv1.NewPeerClient(c), nil
	}
	cfg, err := p.d.clientTLS()
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
func (p *peerPool) reconnect(ctx context.Context, addr string) bool {
	p.mu.Lock()
	c, ok := p.conns[addr]
	p.mu.Unlock()
	if !ok {
		return false
	}
	c.ResetConnectBackoff()
	c.Connect()
	attempted := false
	for {
		switch s := c.GetState(); {
		case s == connectivity.Ready:
			return true
		case s == connectivity.TransientFailure && attempted:
			return false
		case s == connectivity.Connecting:
			attempted = true
			if !c.WaitForStateChange(ctx, s) {
				return false
			}
		default: // idle, or the failure from before the reset
			if !c.WaitForStateChange(ctx, s) {
				return false
			}
		}
	}
}

// dialFailed says whether err is a failure to connect, so the call never
// reached the peer and trying again cannot apply it twice.
func dialFailed(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	m := status.Convert(err).Message()
	return strings.Contains(m, "Error while dialing") || strings.Contains(m, "connection refused")
}

// callNode runs f against node's peer API with a deadline of timeout. A
// call that could not connect is tried once more after a fresh connection
// attempt (at most 2 s), then its error is returned prefixed "on NODE: ".
func (d *Daemon) callNode(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	rec, ok := ms.Nodes[node]
	if !ok {
		return status.Errorf(codes.NotFound, "node %s is not in the cluster", node)
	}
	c, err := d.peerClient(rec.BackendAddr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = f(cctx, c)
	if dialFailed(err) {
		d.mu.Lock()
		pool := d.peers
		d.mu.Unlock()
		rctx, rcancel := context.WithTimeout(cctx, 2*time.Second)
		ready := pool != nil && pool.reconnect(rctx, rec.BackendAddr)
		rcancel()
		if ready {
			err = f(cctx, c)
		}
	}
	if err != nil {
		return status.Errorf(status.Code(err), "on %s: %s", node, grpcMessage(err))
	}
	return nil
}

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

func (p *peerPool) probe(ctx context.Context, self string, addrs []string, timeout time.Duration) map[string]cluster.Probe {
	out := make(map[string]cluster.Probe, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := p.ping(ctx, self, a, timeout)
			mu.Lock()
			out[a] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (p *peerPool) ping(ctx context.Context, self, addr string, timeout time.Duration) cluster.Probe {
	c, err := p.client(addr)
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
