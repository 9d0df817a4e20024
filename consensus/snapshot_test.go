package consensus

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func applyCmd(t *testing.T, m *metaSM, index uint64, c Command) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Update(sm.Entry{Index: index, Cmd: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := resultError(resultErrors, res); err != nil {
		t.Fatalf("entry %d (%s): %v", index, c.Op, err)
	}
}

func bootedSM(t *testing.T, checkReaders bool) *metaSM {
	t.Helper()
	m := &metaSM{s: emptyState(), checkReaders: checkReaders}
	applyCmd(t, m, 1, Command{Op: opBootstrap, At: time.Now(), Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{Name: "c", ID: "cid"}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}})
	return m
}

func lookupState(t *testing.T, m *metaSM) *MetaState {
	t.Helper()
	v, err := m.Lookup(stateQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*MetaState)
}

// checkedSM is a fresh state machine that publishes every entry and fails
// t at the end if any published copy was changed afterwards: by the test,
// or by an apply that changed a shared record in place.
func checkedSM(t testing.TB) *metaSM {
	m := &metaSM{s: emptyState(), checkReaders: true}
	t.Cleanup(func() {
		m.retire()
		if n := m.readerMutations.Load(); n != 0 {
			t.Errorf("%d published copies of the metadata were changed after publishing (an apply changed a shared record in place?)", n)
		}
	})
	return m
}

// Reads share one copy until the next entry; the small maps are deep
// copies, so a reader's mutation of them never reaches the state machine,
// and with checkReaders any reader's mutation is caught when the copy is
// retired, shared records included.
func TestSharedStateIsACopyAndMutationsAreCaught(t *testing.T) {
	m := bootedSM(t, true)
	a, b := lookupState(t, m), lookupState(t, m)
	if a != b {
		t.Fatal("two reads without a change in between made two copies")
	}
	// A misbehaving reader.
	a.Config["leak"] = "yes"
	a.Nodes["n1"].Note = "leaked"
	a.Volumes["ghost"] = &VolumeEntry{Name: "ghost"}
	if m.s.Config["leak"] != "" || m.s.Nodes["n1"].Note != "" || m.s.Volumes["ghost"] != nil {
		t.Fatal("a reader's mutation reached the state machine")
	}
	applyCmd(t, m, 2, Command{Op: opSetConfig, At: time.Now(), SetConfig: map[string]string{"k": "v"}})
	if got := m.readerMutations.Load(); got != 1 {
		t.Fatalf("reader mutations counted: %d, want 1", got)
	}
	// Volume records are shared (copy on write): a reader changing one
	// is caught too.
	applyCmd(t, m, 3, Command{Op: opVolumeCreate, At: time.Now(), Volume: &VolumeEntry{Name: "v", Size: 1 << 20, Replicas: []string{"n1"}}})
	lookupState(t, m).Volumes["v"].Size = 1
	applyCmd(t, m, 4, Command{Op: opSetConfig, At: time.Now(), SetConfig: map[string]string{"k": "v"}})
	if got := m.readerMutations.Load(); got != 2 {
		t.Fatalf("reader mutations counted: %d, want 2", got)
	}
	m.s.Volumes["v"].Size = 1 << 20 // repaired, unchecked
	m.pub.Store(nil)
	c := lookupState(t, m)
	if c == a {
		t.Fatal("the copy was not replaced after an entry")
	}
	if c.Config["k"] != "v" || c.Config["leak"] != "" || c.Volumes["ghost"] != nil || c.Applied != 4 {
		t.Fatalf("new copy: config %v, volumes %v, applied %d", c.Config, c.Volumes, c.Applied)
	}
	// A well-behaved reader retires nothing suspicious.
	applyCmd(t, m, 5, Command{Op: opSetConfig, At: time.Now(), SetConfig: map[string]string{"k": "w"}})
	if got := m.readerMutations.Load(); got != 2 {
		t.Fatalf("reader mutations after a clean read: %d, want 1", got)
	}
	// Clone is the way to get a copy to change.
	d := lookupState(t, m).Clone()
	d.Config["mine"] = "ok"
	applyCmd(t, m, 6, Command{Op: opSetConfig, At: time.Now(), SetConfig: map[string]string{"k": "x"}})
	if got := m.readerMutations.Load(); got != 2 {
		t.Fatalf("reader mutations after changing a Clone: %d, want 1", got)
	}
}

// Concurrent readers while entries apply: under -race, a shared copy that
// the state machine kept writing to would be reported.
func TestSharedStateConcurrentReaders(t *testing.T) {
	m := bootedSM(t, true)
	var mu sync.RWMutex // dragonboat's: Update excludes Lookups
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.RLock()
				s := lookupState(t, m)
				mu.RUnlock()
				// Read everything after the lock is released, as callers do.
				_ = len(s.Volumes) + len(s.Config) + len(s.Nodes["n1"].Name)
				if _, err := json.Marshal(s); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range 200 {
		mu.Lock()
		applyCmd(t, m, uint64(2*i+2), Command{Op: opVolumeCreate, At: time.Now(), Volume: &VolumeEntry{Name: fmt.Sprintf("v%d", i), Size: 1 << 20, Replicas: []string{"n1"}}})
		mu.Unlock()
		// Changes of records readers share, and events (copy on write).
		mu.Lock()
		applyCmd(t, m, uint64(2*i+3), Command{Op: opVolumeState, At: time.Now(), Volume: &VolumeEntry{Name: fmt.Sprintf("v%d", i/2), State: VolumeReady}})
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	if got := m.readerMutations.Load(); got != 0 {
		t.Fatalf("reader mutations: %d", got)
	}
	if n := len(lookupState(t, m).Volumes); n != 200 {
		t.Fatalf("volumes: %d", n)
	}
}

// Through a real host: LocalState answers the shared copy and the check
// counts a caller's mutation (HostConfig.CheckMetaReaders).
func TestLocalStateReaderMutationCounted(t *testing.T) {
	hosts := newCluster(t, 1, 0)
	ctx := ctxT(t, 20*time.Second)
	h := hosts[0]
	a, err := h.meta.LocalState()
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.meta.LocalState()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("LocalState copied the state twice without a change")
	}
	a.Config["leak"] = "yes"
	if err := h.meta.SetConfig(ctx, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	n, err := h.meta.ReaderMutations()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("ReaderMutations = %d, want 1", n)
	}
	st, err := h.meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Config["leak"] != "" || st.Config["k"] != "v" {
		t.Fatalf("config after a reader's mutation: %v", st.Config)
	}
}

// BenchmarkMetaStateRead is the cost of one metadata read with 1000
// volumes: the JSON copy every read made before (issue 17) and every
// first read after a change made until copy on write, against publishing
// now and the shared copy.
func BenchmarkMetaStateRead(b *testing.B) {
	m := &metaSM{s: emptyState()}
	at := time.Now()
	for i, c := range []Command{
		{Op: opBootstrap, At: at, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{Name: "c", ID: "cid"}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}},
	} {
		data, _ := json.Marshal(c)
		if _, err := m.Update(sm.Entry{Index: uint64(i + 1), Cmd: data}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1000 {
		data, _ := json.Marshal(Command{Op: opVolumeCreate, At: at, Volume: &VolumeEntry{Name: fmt.Sprintf("v%04d", i), Size: 1 << 30, Replicas: []string{"n1"}}})
		if _, err := m.Update(sm.Entry{Index: uint64(i + 2), Cmd: data}); err != nil {
			b.Fatal(err)
		}
	}
	// What every change costs the next reader now: publishing shares
	// the volume records and copies the rest.
	b.Run("publish-after-change", func(b *testing.B) {
		for b.Loop() {
			m.retire()
			_ = m.published()
		}
	})
	b.Run("json-copy-per-read", func(b *testing.B) {
		for b.Loop() {
			_ = m.s.clone()
		}
	})
	// The first read after the last entry builds the shared copy.
	if _, err := m.Lookup(stateQuery{}); err != nil {
		b.Fatal(err)
	}
	b.Run("shared-copy", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Lookup(stateQuery{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// checkedApply is apply as Update runs it in checked mode: the command
// applied, the previous copy retired (and checked), a new copy published.
// Tests that apply commands directly go through it, so that with
// checkedSM any apply changing a shared record in place fails them.
func (m *metaSM) checkedApply(c *Command) ([]byte, error) {
	data, err := m.apply(c)
	m.retire()
	if m.checkReaders {
		m.published()
	}
	return data, err
}
