package replication

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// localStore creates and opens a real local replica.
func localStore(t *testing.T, name string, size int64) *blockstore.LocalVolume {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".vol")
	if err := blockstore.Create(path, size, blockstore.CreateOptions{MaxPeers: 2, DiskState: blockstore.DiskUpToDate}); err != nil {
		t.Fatal(err)
	}
	v, err := blockstore.Open(path, blockstore.OpenOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// serveStore serves a secondary over any store on loopback (addr "" picks
// a port) until the returned stop is called.
func serveStore(t *testing.T, store blockstore.Volume, auth *authority, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	sec := NewSecondary(slog.New(slog.NewTextHandler(io.Discard, nil)), func(vol string) (*Target, error) {
		return &Target{Name: vol, Store: store, VolumeID: "id1", Authority: auth}, nil
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				var name [2]byte
				if _, err := io.ReadFull(c, name[:]); err != nil {
					c.Close()
					return
				}
				_ = sec.ServeConn(ctx, c, string(name[:]))
			}()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ln.Close()
			cancel()
			sec.mu.Lock()
			for c := range sec.conns {
				c.Close()
			}
			sec.mu.Unlock()
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func readAll(t *testing.T, ctx context.Context, v blockstore.Volume) []byte {
	t.Helper()
	b := make([]byte, v.Size())
	if _, err := v.ReadAt(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGrowReplicatedVolume grows real replicas online, in the volume
// manager's order (secondaries, then the primary), while writes run; a
// replica that was down during the grow grows and resyncs when it is back,
// and every replica ends identical, including past the old end.
func TestGrowReplicatedVolume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const oldSize, newSize = 4 << 20, 8 << 20
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	fence := &fencer{epoch: 1, states: map[string]ReplicaState{}, primary: "n1", peers: []string{"n2", "n3"}}
	local, s2, s3 := localStore(t, "n1", oldSize), localStore(t, "n2", oldSize), localStore(t, "n3", oldSize)
	addr2, _ := serveStore(t, s2, auth, "")
	addr3, stop3 := serveStore(t, s3, auth, "")
	p, err := NewPrimary(ctx, Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: local,
		Peers: []PeerConfig{{Name: "n2", Addr: addr2, Slot: 0, InSync: true}, {Name: "n3", Addr: addr3, Slot: 1, InSync: true}},
		Dial:  dialAs("n1"), Fencer: fence, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AckTimeout: time.Second, ReconnectInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	block := func(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
	if _, err := p.WriteAt(ctx, block(1), oldSize-4096, blockstore.FUA); err != nil {
		t.Fatal(err)
	}
	// n3 goes down: it misses the grow.
	stop3()
	if _, err := p.WriteAt(ctx, block(2), 0, blockstore.FUA); err != nil {
		t.Fatal(err)
	}
	if st := fence.state("n3"); st != Outdated {
		t.Fatalf("n3 is %s, want Outdated", st)
	}

	// Writes run below the old end during the grow.
	wctx, wstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var werr error
	go func() {
		defer wg.Done()
		for i := int64(0); wctx.Err() == nil; i++ {
			if _, err := p.WriteAt(wctx, block(byte(i)), (i%256)*4096+8192, 0); err != nil && wctx.Err() == nil {
				werr = err
				return
			}
		}
	}()
	if err := s2.Grow(ctx, newSize); err != nil {
		t.Fatal(err)
	}
	if p.Size() != oldSize {
		t.Fatalf("primary at %d before its own store grew", p.Size())
	}
	if err := local.Grow(ctx, newSize); err != nil {
		t.Fatal(err)
	}
	if p.Size() != newSize {
		t.Fatalf("primary at %d after its store grew, want %d", p.Size(), newSize)
	}
	// Past the old end: lands on n2, marked dirty for n3.
	if _, err := p.WriteAt(ctx, block(3), newSize-4096, blockstore.FUA); err != nil {
		t.Fatalf("write past the old end: %v", err)
	}
	wstop()
	wg.Wait()
	if werr != nil {
		t.Fatalf("write during the grow: %v", werr)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, ctx, s2), readAll(t, ctx, local)) {
		t.Fatal("n2 differs from the primary after the grow")
	}

	// n3 comes back at its old size: it grows at the hello and resyncs.
	serveStore(t, s3, auth, addr3)
	deadline := time.Now().Add(30 * time.Second)
	for fence.state("n3") != UpToDate {
		if time.Now().After(deadline) {
			t.Fatalf("n3 did not resync: %s, log %v", fence.state("n3"), fence.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s3.Size() != newSize {
		t.Fatalf("n3 is %d bytes after its resync, want %d", s3.Size(), newSize)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, ctx, local)
	if !bytes.Equal(want[newSize-4096:], block(3)) {
		t.Fatal("the primary lost the write past the old end")
	}
	if !bytes.Equal(readAll(t, ctx, s3), want) {
		t.Fatal("n3 differs from the primary after growing and resyncing")
	}
}

// TestSecondaryLargerThanPrimary: a secondary that grew before its primary
// did (a grow interrupted before the primary's step) is accepted.
func TestSecondaryLargerThanPrimary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auth := &authority{v: View{Epoch: 1, Primary: "n1"}}
	fence := &fencer{epoch: 1, states: map[string]ReplicaState{}, primary: "n1", peers: []string{"n2"}}
	local, s2 := localStore(t, "n1", 1<<20), localStore(t, "n2", 1<<20)
	if err := s2.Grow(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
	addr2, _ := serveStore(t, s2, auth, "")
	p, err := NewPrimary(ctx, Config{Volume: "vol", VolumeID: "id1", Node: "n1", Epoch: 1, Local: local,
		Peers: []PeerConfig{{Name: "n2", Addr: addr2, Slot: 0, InSync: true}}, Dial: dialAs("n1"), Fencer: fence,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AckTimeout: 5 * time.Second, ReconnectInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), 0, blockstore.FUA); err != nil {
		t.Fatal(err)
	}
	if st := fence.state("n2"); st == Outdated {
		t.Fatalf("n2 was outdated (log %v)", fence.log)
	}
	got := make([]byte, 4096)
	if _, err := s2.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatalf("the write did not reach the larger secondary (err %v)", err)
	}
}
