package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

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

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// probeResult is what one Ping told us.
type probeResult struct {
	online bool
	rtt    time.Duration
	detail string
	// version is the peer's tandemd version, from the same Ping so node
	// list costs no extra round trip.
	version string
}

// probe pings every address in parallel with a short deadline; status must
// answer quickly even when half the cluster is gone.
func (p *peerPool) probe(ctx context.Context, self string, addrs []string, timeout time.Duration) map[string]probeResult {
	out := make(map[string]probeResult, len(addrs))
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

func (p *peerPool) ping(ctx context.Context, self, addr string, timeout time.Duration) probeResult {
	c, err := p.client(addr)
	if err != nil {
		return probeResult{detail: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	// Not WaitForReady: a peer whose connection is already failing is
	// reported offline at once instead of after the whole timeout.
	resp, err := c.Ping(ctx, &tandemv1.PingRequest{From: self})
	if err != nil {
		return probeResult{detail: "no answer: " + grpcMessage(err)}
	}
	return probeResult{online: true, rtt: time.Since(start), version: resp.GetVersion()}
}
