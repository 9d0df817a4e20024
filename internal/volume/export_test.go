package volume

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/replication"
)

// secondary opens volume v on m (node n1) as a secondary with a real
// replica, its shard answering from sh and its local record rec.
func secondary(t *testing.T, m *Manager, sh *fakeShard, rec *consensus.VolumeRecord) *nodeVolume {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.vol")
	if err := blockstore.Create(path, 1<<20, blockstore.CreateOptions{MaxPeers: 3}); err != nil {
		t.Fatal(err)
	}
	store, err := blockstore.Open(path, blockstore.OpenOptions{Logger: m.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := consensus.VolumeEntry{Name: "v", ShardID: 100, Size: 1 << 20, Replicas: []string{"n2", "n1", "n3"}}
	nv := &nodeVolume{m: m, entry: e, peers: peersOf(e, "n1"), vols: sh, store: store,
		changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if rec != nil {
		nv.rec.Store(rec)
	}
	m.mu.Lock()
	m.vols["v"] = nv
	m.mu.Unlock()
	return nv
}

// TestExportRefreshesStaleRecord: the migration source committed the window
// (allow-dual) for n1, but n1 has not applied it yet; the NBD connect of the
// migrating VM must not be refused for that (it was: "node n1 is not the
// primary of volume v: n2 is (epoch 3)").
func TestExportRefreshesStaleRecord(t *testing.T) {
	m := newWorld().manager(t)
	stale := &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, Applied: 10}
	window := &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, MigrationTarget: "n1", Applied: 11}
	sh := &fakeShard{rec: window}
	nv := secondary(t, m, sh, stale)
	exp, err := m.Export(context.Background(), "v")
	if err != nil {
		t.Fatalf("export with the window committed but not applied here: %v", err)
	}
	if _, ok := exp.Volume.(migrationVolume); !ok {
		t.Fatalf("export serves %T, want the migration target's volume", exp.Volume)
	}
	if r := nv.rec.Load(); r.MigrationTarget != "n1" || r.Applied != 11 {
		t.Errorf("the fresh record was not kept: %+v", r)
	}
	if sh.deadline.IsZero() || time.Until(sh.deadline) > exportRefresh {
		t.Errorf("the shard read is not bounded by %s: deadline %v", exportRefresh, sh.deadline)
	}
}

// TestExportRefusals: without a window, a secondary's export is refused
// after the shard confirms it; a shard that does not answer delays the
// refusal by at most exportRefresh or the caller's deadline; an older
// answer never replaces a newer local record.
func TestExportRefusals(t *testing.T) {
	t.Run("no window", func(t *testing.T) {
		m := newWorld().manager(t)
		rec := &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, Applied: 10}
		sh := &fakeShard{rec: rec}
		secondary(t, m, sh, rec)
		_, err := m.Export(context.Background(), "v")
		if err == nil || err.Error() != "node n1 is not the primary of volume v: n2 is (epoch 3)" {
			t.Fatalf("got %v", err)
		}
		if sh.reads != 1 {
			t.Errorf("%d shard reads, want 1", sh.reads)
		}
	})
	t.Run("shard silent", func(t *testing.T) {
		m := newWorld().manager(t)
		sh := &fakeShard{block: true}
		secondary(t, m, sh, &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := m.Export(ctx, "v")
		if err == nil || !strings.Contains(err.Error(), "is not the primary") {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("the refusal took %s despite the caller's 100ms", d)
		}
	})
	t.Run("not applied, no quorum", func(t *testing.T) {
		m := newWorld().manager(t)
		sh := &fakeShard{err: consensus.ErrNoQuorum}
		secondary(t, m, sh, nil)
		if _, err := m.Export(context.Background(), "v"); err == nil || err.Error() != "volume v is not ready on n1 yet" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("older answer", func(t *testing.T) {
		m := newWorld().manager(t)
		newer := &consensus.VolumeRecord{Name: "v", Primary: "n3", Epoch: 4, Applied: 20}
		sh := &fakeShard{rec: &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, MigrationTarget: "n1", Applied: 11}}
		secondary(t, m, sh, newer)
		if _, err := m.Export(context.Background(), "v"); err == nil || !strings.Contains(err.Error(), "n3 is (epoch 4)") {
			t.Fatalf("a stale shard answer opened an old window: %v", err)
		}
	})
	t.Run("unknown volume", func(t *testing.T) {
		m := newWorld().manager(t)
		if _, err := m.Export(context.Background(), "nope"); !errors.Is(err, nbd.ErrUnknownExport) {
			t.Fatalf("got %v", err)
		}
	})
}

// fakeShard is a volume's shard: Record answers from rec (or err, or
// waits for ctx when block is set) and notes the deadline it was given.
type fakeShard struct {
	Shard
	mu       sync.Mutex
	rec      *consensus.VolumeRecord
	err      error
	block    bool
	reads    int
	deadline time.Time
}

func (s *fakeShard) Record(ctx context.Context, _ uint64) (*consensus.VolumeRecord, error) {
	s.mu.Lock()
	s.reads++
	s.deadline, _ = ctx.Deadline()
	rec, err, block := s.rec, s.err, s.block
	s.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return rec, err
}

// TestWindowReadsOnlyFromUpToDate: the migration target's export reads
// its own replica only while the record says that replica holds every
// acknowledged write. Seed 2073's target turned Outdated during the
// migration (its tandemd was killed) and its guest would have read what
// the primary wrote meanwhile as it was before.
func TestWindowReadsOnlyFromUpToDate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rec   *consensus.VolumeRecord
		error string
	}{
		{"UpToDate", window(consensus.UpToDate), ""},
		{"SyncSource", window(consensus.SyncSource), ""},
		{"Outdated", window(consensus.Outdated), "the replica of v on n1 is Outdated; it may miss acknowledged writes"},
		{"Inconsistent", window(consensus.Inconsistent), "the replica of v on n1 is Inconsistent"},
		{"window closed", &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, Applied: 12,
			Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: consensus.UpToDate}}}, "the migration window is closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newWorld().manager(t)
			open := window(consensus.UpToDate)
			nv := secondary(t, m, &fakeShard{rec: open}, open)
			exp, err := m.Export(context.Background(), "v")
			if err != nil {
				t.Fatal(err)
			}
			nv.rec.Store(tc.rec) // the record changed after the connect
			buf := make([]byte, 4096)
			_, err = exp.Volume.ReadAt(context.Background(), buf, 0)
			switch {
			case tc.error == "" && err != nil:
				t.Fatalf("read: %v", err)
			case tc.error != "" && (!errors.Is(err, blockstore.ErrFrozen) || !strings.Contains(err.Error(), tc.error)):
				t.Fatalf("read: got %v, want ErrFrozen with %q", err, tc.error)
			}
		})
	}
}

// window is v's record with the migration window open for n1, whose
// replica is in state st.
func window(st consensus.ReplicaState) *consensus.VolumeRecord {
	return &consensus.VolumeRecord{Name: "v", Primary: "n2", Epoch: 3, MigrationTarget: "n1", Applied: 11,
		Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: st}, "n2": {State: consensus.UpToDate}}}
}

// TestExportEndsWithItsPrimary: the primary's export carries the
// primary's Done, so the NBD server ends its connections when the primary
// is retired (a handover, a freeze), and a retired primary not yet
// replaced is not exported: a client would get nothing but errors from it.
func TestExportEndsWithItsPrimary(t *testing.T) {
	m := newWorld().manager(t)
	rec := &consensus.VolumeRecord{Name: "v", Primary: "n1", Epoch: 3, Applied: 11,
		Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: consensus.UpToDate}}}
	nv := secondary(t, m, &fakeShard{rec: rec}, rec)
	p, err := replication.NewPrimary(t.Context(), replication.Config{Volume: "v", VolumeID: "id", Node: "n1", Epoch: 3, Local: nv.store, Log: m.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	nv.mu.Lock()
	nv.primary, nv.primaryEpoch = p, 3
	nv.mu.Unlock()
	exp, err := m.Export(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if exp.Done == nil {
		t.Fatal("the primary's export has no Done")
	}
	p.Retire(errors.New("handed over"))
	select {
	case <-exp.Done:
	default:
		t.Fatal("the export's Done did not close with its primary")
	}
	if _, err := m.Export(context.Background(), "v"); err == nil || !strings.Contains(err.Error(), "node n1 is not serving volume v as primary now") {
		t.Fatalf("export of a retired primary: %v", err)
	}
}
