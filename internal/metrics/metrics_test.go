package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
)

// fakeMeta is the metadata shard as the gauges read it.
type fakeMeta struct {
	leader, term uint64
	known        bool
	applied      uint64
	stateErr     error
}

func (f *fakeMeta) Leader() (uint64, uint64, bool) { return f.leader, f.term, f.known }

func (f *fakeMeta) LocalState() (*consensus.MetaState, error) {
	if f.stateErr != nil {
		return nil, f.stateErr
	}
	return &consensus.MetaState{Applied: f.applied}, nil
}

// node is a fake node: its replica ID (0: in no cluster) and its metadata
// client (nil: none).
type node struct {
	replica uint64
	meta    *fakeMeta
}

func (n *node) metrics() *Metrics {
	return New(Config{
		Node:   "n1",
		Member: func() (uint64, bool) { return n.replica, n.replica != 0 },
		Meta: func() Meta {
			if n.meta == nil {
				return nil // not a typed nil
			}
			return n.meta
		},
	})
}

// help is every gauge's help text: names and help texts are the contract
// with dashboards and bench/.
var help = map[string]string{
	"tandem_cluster_member":              "1 when this node belongs to a cluster.",
	"tandem_raft_metadata_is_leader":     "1 when this node leads the metadata shard.",
	"tandem_raft_metadata_has_leader":    "1 when this node knows a metadata shard leader.",
	"tandem_raft_metadata_term":          "Current Raft term of the metadata shard as seen locally.",
	"tandem_raft_metadata_applied_index": "Last metadata log index applied locally.",
}

var gauges = []string{"tandem_cluster_member", "tandem_raft_metadata_is_leader", "tandem_raft_metadata_has_leader", "tandem_raft_metadata_term", "tandem_raft_metadata_applied_index"}

// scrape gathers m's registry: the value of every tandem gauge, checking
// its help text and its one "node" label on the way.
func scrape(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		want, ok := help[mf.GetName()]
		if !ok {
			continue
		}
		if mf.GetHelp() != want {
			t.Errorf("%s help %q, want %q", mf.GetName(), mf.GetHelp(), want)
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s: %d series", mf.GetName(), len(mf.GetMetric()))
		}
		s := mf.GetMetric()[0]
		if l := s.GetLabel(); len(l) != 1 || l[0].GetName() != "node" || l[0].GetValue() != "n1" {
			t.Errorf("%s labels %v", mf.GetName(), l)
		}
		got[mf.GetName()] = s.GetGauge().GetValue()
	}
	return got
}

func TestGauges(t *testing.T) {
	n := &node{}
	m := n.metrics()
	for _, c := range []struct {
		name  string
		set   func()
		value []float64
	}{
		{"in no cluster", func() {}, []float64{0, 0, 0, 0, 0}},
		// The identity is written before the Raft host runs (startup, create,
		// join): a scrape then must read zeros, not fail.
		{"identity, no Raft host yet", func() { n.replica = 2 }, []float64{1, 0, 0, 0, 0}},
		{"no leader known", func() { n.meta = &fakeMeta{term: 4, applied: 9} }, []float64{1, 0, 0, 4, 9}},
		{"another node leads", func() { n.meta = &fakeMeta{leader: 1, term: 5, known: true, applied: 10} }, []float64{1, 0, 1, 5, 10}},
		{"this node leads", func() { n.meta = &fakeMeta{leader: 2, term: 6, known: true, applied: 11} }, []float64{1, 1, 1, 6, 11}},
		{"local state unreadable", func() { n.meta.stateErr = errors.New("closed") }, []float64{1, 1, 1, 6, 0}},
	} {
		c.set()
		got := scrape(t, m)
		if len(got) != len(gauges) {
			t.Fatalf("%s: gauges %v, want all of %v", c.name, got, gauges)
		}
		for i, g := range gauges {
			if got[g] != c.value[i] {
				t.Errorf("%s: %s = %v, want %v", c.name, g, got[g], c.value[i])
			}
		}
	}
}

func TestObservePropose(t *testing.T) {
	m := (&node{}).metrics()
	m.ObservePropose(consensus.MetaShardID, 300*time.Microsecond, nil)
	m.ObservePropose(consensus.MetaShardID, time.Second, errors.New("timeout"))
	m.ObservePropose(consensus.MetaShardID+7, 10*time.Second, nil)
	// The histogram's name, help, labels and buckets, as bench/ parses them.
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() != "tandem_raft_propose_seconds" {
			continue
		}
		found = true
		if mf.GetHelp() != "Time to commit and apply a Raft proposal, retries included." {
			t.Errorf("help %q", mf.GetHelp())
		}
		counts := map[string]uint64{}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["node"] != "n1" || len(labels) != 3 {
				t.Errorf("labels %v", labels)
			}
			h := s.GetHistogram()
			counts[labels["shard"]+"/"+labels["result"]] = h.GetSampleCount()
			if b := h.GetBucket(); len(b) != 16 || b[0].GetUpperBound() != 0.0002 || b[15].GetUpperBound() != 0.0002*(1<<15) {
				t.Errorf("buckets %v", b)
			}
		}
		want := map[string]uint64{"metadata/ok": 1, "metadata/error": 1, "volume/ok": 1, "volume/error": 0}
		for k, v := range want {
			if counts[k] != v {
				t.Errorf("%s: %d observations, want %d (all: %v)", k, counts[k], v, counts)
			}
		}
	}
	if !found {
		t.Error("tandem_raft_propose_seconds not registered")
	}
}

// TestHandlerServesEverything scrapes the handler: every tandem metric and
// the Go and process collectors are on it.
func TestHandlerServesEverything(t *testing.T) {
	m := (&node{replica: 1, meta: &fakeMeta{leader: 1, known: true}}).metrics()
	m.ObservePropose(consensus.MetaShardID, time.Millisecond, nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, name := range append(gauges, "tandem_raft_propose_seconds_bucket", "go_goroutines", "process_start_time_seconds") {
		if !strings.Contains(string(body), "\n"+name) {
			t.Errorf("scrape lacks %s", name)
		}
	}
}

// Refused joins are one counter with a reason label, as the e2e join
// flood test and dashboards read it.
func TestJoinRefused(t *testing.T) {
	m := (&node{}).metrics()
	for range 3 {
		m.JoinRefused("bad_token")
	}
	m.JoinRefused("rate_limited")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"# TYPE tandem_join_refused_total counter",
		`tandem_join_refused_total{node="n1",reason="bad_token"} 3`,
		`tandem_join_refused_total{node="n1",reason="rate_limited"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
