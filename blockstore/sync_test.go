package blockstore

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newSyncTest returns a small volume with a counting disk and a block to
// write.
func newSyncTest(t *testing.T) (context.Context, *LocalVolume, *faultDisk, []byte) {
	v, _ := newVolume(t, 1<<20, CreateOptions{})
	return t.Context(), v, inject(v), alignedBuf(4096)
}

// A client that writes then flushes gets its fdatasync run ahead by
// SyncAhead; the flush then costs no second one.
func TestSyncAheadForFlushAfterWrite(t *testing.T) {
	ctx, v, fd, buf := newSyncTest(t)
	syncs := func() int { _, _, s := fd.counts(); return s }

	// No flush seen yet: nothing to sync ahead for.
	for i := range 8 {
		if _, err := v.WriteAt(ctx, buf, int64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
	}
	if v.SyncAhead(ctx) || syncs() != 0 {
		t.Fatalf("synced ahead without any flush seen (%d syncs)", syncs())
	}
	// A run of 8 writes per flush is not a flush-after-write pattern.
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	if v.SyncAhead(ctx) || syncs() != 1 {
		t.Fatalf("synced ahead in a run-of-8 pattern (%d syncs, want the flush's 1)", syncs())
	}
	// Write, flush: the pattern is now one write per flush.
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		want := 3 + i
		if _, err := v.WriteAt(ctx, buf, int64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
		if !v.SyncAhead(ctx) || syncs() != want {
			t.Fatalf("round %d: no sync ahead (%d syncs, want %d)", i, syncs(), want)
		}
		if v.SyncAhead(ctx) {
			t.Fatalf("round %d: synced ahead twice for one write", i)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if syncs() != want {
			t.Fatalf("round %d: flush after a sync ahead made %d syncs, want %d", i, syncs(), want)
		}
	}
	// Two writes after the pattern of one: the second is not covered.
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	v.SyncAhead(ctx)
	if _, err := v.WriteAt(ctx, buf, 4096, 0); err != nil {
		t.Fatal(err)
	}
	n := syncs()
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if syncs() != n+1 {
		t.Fatalf("flush after a write the sync ahead did not cover: %d syncs, want %d", syncs(), n+1)
	}
}

// A write that completes after a sync started is not covered by it.
func TestFlushAfterSyncStartedStillSyncs(t *testing.T) {
	ctx, v, fd, buf := newSyncTest(t)
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	// Hold a sync in flight while another write completes.
	release := make(chan struct{})
	started := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	v.f = &blockingSync{faultDisk: fd, started: started, release: release}
	errc := make(chan error, 1)
	go func() { errc <- v.Flush(ctx) }()
	<-started
	if _, err := v.WriteAt(ctx, buf, 4096, 0); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- v.Flush(ctx) }()
	select {
	case err := <-flushed:
		// It may not join the running sync (which started before the
		// write); it must have made its own.
		if err != nil {
			t.Fatal(err)
		}
		if _, _, s := fd.counts(); s < 1 { // the held one is not counted yet
			t.Fatalf("second flush returned with %d syncs: it relied on a sync that began before its write", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second flush waited for the older sync instead of syncing")
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

type blockingSync struct {
	*faultDisk
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

// Datasync holds the first call until release; later ones pass.
func (b *blockingSync) Datasync() error {
	first := false
	b.once.Do(func() { first = true })
	if first {
		close(b.started)
		<-b.release
	}
	return b.faultDisk.Datasync()
}

// A failed sync ahead fails the flush that relies on it, and every later
// one (sticky).
func TestSyncAheadFailureReachesTheFlush(t *testing.T) {
	ctx, v, fd, buf := newSyncTest(t)
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fd.mu.Lock()
	fd.failSync = syscall.EIO
	fd.mu.Unlock()
	if _, err := v.WriteAt(ctx, buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	v.SyncAhead(ctx)
	if err := v.Flush(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush after a failed sync: %v, want EIO", err)
	}
	if err := v.Flush(ctx); !errors.Is(err, syscall.EIO) {
		t.Fatalf("later flush: %v, want the sticky EIO", err)
	}
}
