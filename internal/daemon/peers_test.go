package daemon

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestReconnectCutsBackoffShort: after a peer was down long enough for the
// connection to back off, reconnect connects at once when it is back, and
// gives up quickly while it is still down.
func TestReconnectCutsBackoffShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the peer is down
	bo := backoff.DefaultConfig
	bo.BaseDelay, bo.MaxDelay = 30*time.Second, 30*time.Second // a backoff far longer than the test
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	p := &peerPool{conns: map[string]*grpc.ClientConn{addr: cc}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := time.Now()
	if p.reconnect(ctx, addr) {
		t.Fatal("reconnected to a peer that is down")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("giving up on a refused peer took %s", d)
	}

	ln, err = net.Listen("tcp", addr) // the peer is back
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	srv := grpc.NewServer()
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	start = time.Now()
	if !p.reconnect(ctx, addr) {
		t.Fatal("no connection to a peer that is back")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("reconnecting took %s, as if it waited out the backoff", d)
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
