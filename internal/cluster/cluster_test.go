package cluster

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeMeta is the metadata client of a three-node cluster n1, n2, n3.
type fakeMeta struct {
	state.Meta // the methods this package does not call stay nil

	mu       sync.Mutex
	ms       *consensus.MetaState
	quorum   error
	tokens   []consensus.TokenRecord
	setCalls []map[string]string
}

func newFakeMeta() *fakeMeta {
	ms := &consensus.MetaState{Applied: 42, Config: map[string]string{}, Nodes: map[string]*consensus.NodeRecord{}}
	for i, n := range []string{"n1", "n2", "n3"} {
		ms.Nodes[n] = &consensus.NodeRecord{Name: n, ReplicaID: uint64(i + 1), BackendAddr: n + ":7000", State: consensus.NodeMember, Vote: "voter"}
	}
	return &fakeMeta{ms: ms}
}

func (f *fakeMeta) State(context.Context) (*consensus.MetaState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.quorum != nil {
		return nil, f.quorum
	}
	return f.ms, nil
}

func (f *fakeMeta) LocalState() (*consensus.MetaState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ms, nil
}

func (f *fakeMeta) CheckQuorum(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quorum
}

func (f *fakeMeta) Membership(context.Context) (consensus.Membership, error) {
	return consensus.Membership{Voters: map[uint64]string{1: "a", 2: "b", 3: "c"}}, nil
}

func (f *fakeMeta) LocalMembership() (consensus.Membership, error) {
	return f.Membership(context.Background())
}

func (f *fakeMeta) Leader() (uint64, uint64, bool) { return 2, 7, true }

func (f *fakeMeta) AddToken(_ context.Context, t consensus.TokenRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, t)
	return nil
}

func (f *fakeMeta) SetConfigResult(_ context.Context, kv map[string]string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setCalls = append(f.setCalls, kv)
	for k, v := range kv {
		if v == "" {
			delete(f.ms.Config, k)
		} else {
			f.ms.Config[k] = v
		}
	}
	return f.ms.Config, nil
}

// newManager is n1's Manager; n2 answers pings, n3 does not.
func newManager(t *testing.T, meta *fakeMeta, inCluster bool) (*Manager, *int) {
	t.Helper()
	quorumAsked := 0
	st := &state.State{
		Node: state.Node{Name: "n1", DataDir: "/var/lib/tandem"},
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Meta: func() state.Meta {
			if !inCluster {
				return nil
			}
			return meta
		},
		Quorum: func(ctx context.Context) error {
			quorumAsked++
			if err := meta.CheckQuorum(ctx); err != nil {
				return status.Error(codes.FailedPrecondition, "no quorum")
			}
			return nil
		},
		Cluster: func() (state.Cluster, bool) {
			return state.Cluster{Name: "lab", ID: "c-1", CACert: testCA(t)}, inCluster
		},
		Now: func() time.Time { return time.Unix(1_800_000_000, 0) },
	}
	probe := func(_ context.Context, addrs []string, _ time.Duration) map[string]Probe {
		out := map[string]Probe{}
		for _, a := range addrs {
			if a == "n2:7000" {
				out[a] = Probe{Online: true, RTT: 300 * time.Microsecond, Version: "v1"}
			} else {
				out[a] = Probe{Detail: "connection refused"}
			}
		}
		return out
	}
	return New(Config{State: st, Probe: probe, QuorumTimeout: time.Second}), &quorumAsked
}

func TestStatusOutsideACluster(t *testing.T) {
	m, _ := newManager(t, newFakeMeta(), false)
	st := m.Status(context.Background())
	if st.Initialized || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "not in a cluster") || st.AnsweredBy != "n1" {
		t.Fatalf("status outside a cluster: %+v", st)
	}
}

func TestStatusNodeTable(t *testing.T) {
	m, _ := newManager(t, newFakeMeta(), true)
	st := m.Status(context.Background())
	if !st.Quorate || st.Leader != "n2" || st.Term != 7 || st.Voters != 3 || st.VotesOnline != 2 || st.Quorum != 2 || st.AppliedIndex != 42 {
		t.Fatalf("status: quorate %v leader %q term %d voters %d online %d quorum %d applied %d",
			st.Quorate, st.Leader, st.Term, st.Voters, st.VotesOnline, st.Quorum, st.AppliedIndex)
	}
	want := map[string]tandemv1.Health{"n1": tandemv1.Health_HEALTH_ONLINE, "n2": tandemv1.Health_HEALTH_ONLINE, "n3": tandemv1.Health_HEALTH_OFFLINE}
	for _, n := range st.Nodes {
		if n.Health != want[n.Name] {
			t.Errorf("%s: health %v, want %v", n.Name, n.Health, want[n.Name])
		}
	}
	if n3 := st.Nodes[2]; n3.Name != "n3" || n3.HealthDetail != "connection refused" {
		t.Errorf("nodes not sorted or n3's reason lost: %+v", st.Nodes)
	}
	if st.Nodes[1].RttUs != 300 || st.Nodes[1].Version != "v1" {
		t.Errorf("n2's probe not shown: %+v", st.Nodes[1])
	}
}

// Without quorum, status still answers, from the local state, and says so.
func TestStatusWithoutQuorum(t *testing.T) {
	meta := newFakeMeta()
	meta.quorum = consensus.ErrNoQuorum
	m, _ := newManager(t, meta, true)
	st := m.Status(context.Background())
	if st.Quorate || st.Leader != "" || st.AppliedIndex != 42 {
		t.Fatalf("status without quorum: %+v", st)
	}
	if len(st.Warnings) == 0 || !strings.Contains(st.Warnings[0], "NOT QUORATE: 2 of 3 votes online, 2 needed") {
		t.Fatalf("warnings: %q", st.Warnings)
	}
}

func TestStatusNamesRemovalAndStuckJoins(t *testing.T) {
	meta := newFakeMeta()
	meta.ms.Nodes["n1"].State = consensus.NodeRemoved
	meta.ms.Nodes["n3"].State = consensus.NodeJoining
	m, _ := newManager(t, meta, true)
	got := strings.Join(m.Status(context.Background()).Warnings, "\n")
	for _, w := range []string{"this node (n1) was removed from the cluster; stop tandemd, wipe /var/lib/tandem", "node n3 is still joining"} {
		if !strings.Contains(got, w) {
			t.Errorf("warnings lack %q:\n%s", w, got)
		}
	}
}

// A node told of its removal says who removed it, with which credential,
// when and who told it; one that every other member merely refuses in the
// handshake says it was probably removed, and no more.
func TestStatusRemovalKnownOrGuessed(t *testing.T) {
	meta := newFakeMeta()
	meta.quorum = consensus.ErrNoQuorum // as a removed node sees it
	m, _ := newManager(t, meta, true)
	m.probe = func(_ context.Context, addrs []string, _ time.Duration) map[string]Probe {
		out := map[string]Probe{}
		for _, a := range addrs {
			out[a] = Probe{Detail: `no answer: connection error: desc = "error reading server preface: remote error: tls: bad certificate"`}
		}
		return out
	}
	got := strings.Join(m.Status(context.Background()).Warnings, "\n")
	if !strings.Contains(got, "every other member refuses this node's certificate: this node (n1) was probably removed") || strings.Contains(got, "was removed from") {
		t.Fatalf("guess:\n%s", got)
	}

	m.st.Removal = &state.Removal{}
	m.st.Removal.Set(state.RemovalRecord{ClusterName: "lab", By: "n2", As: "alice", At: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC), ToldBy: "n3"})
	got = strings.Join(m.Status(context.Background()).Warnings, "\n")
	want := "this node (n1) was removed from cluster lab by n2 (credential alice) at 2026-12-06T09:00:00Z (told by n3)"
	if !strings.Contains(got, want) || strings.Contains(got, "probably") {
		t.Fatalf("known removal:\n%s\nwant %q", got, want)
	}
}

// A bad change is refused whole, before quorum is even asked, and nothing
// is written.
func TestSetConfigRefusals(t *testing.T) {
	cases := []struct {
		values map[string]string
		code   codes.Code
		want   string
	}{
		{nil, codes.InvalidArgument, "no settings given"},
		{map[string]string{"Bad Key": "1"}, codes.InvalidArgument, `setting name "Bad Key"`},
		{map[string]string{"nosuch.key": "1"}, codes.InvalidArgument, "nosuch.key"},
		{map[string]string{"resync.rate": "fast", "ha.dead_timeout": "x"}, codes.InvalidArgument, "ha.dead_timeout"},
		{map[string]string{"resync.rate": strings.Repeat("9", maxConfigValue+1)}, codes.InvalidArgument, "the limit is 4096"},
	}
	for _, c := range cases {
		meta := newFakeMeta()
		m, asked := newManager(t, meta, true)
		_, err := m.SetConfig(context.Background(), c.values)
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("%v: %v, want %v naming %q", c.values, err, c.code, c.want)
		}
		if *asked != 0 || len(meta.setCalls) != 0 {
			t.Errorf("%v: quorum asked %d times, %d writes", c.values, *asked, len(meta.setCalls))
		}
	}
}

func TestSetConfigCanonicalAndCoherent(t *testing.T) {
	meta := newFakeMeta()
	m, _ := newManager(t, meta, true)
	cfg, err := m.SetConfig(context.Background(), map[string]string{"resync.rate": "100M"})
	if err != nil || cfg.Values["resync.rate"] != "100MiB/s" {
		t.Fatalf("SetConfig: %v %v", cfg, err)
	}
	// Dead before suspect makes the HA timing incoherent as a whole.
	d := ha.DefaultTiming()
	_, err = m.SetConfig(context.Background(), map[string]string{ha.KeyDead: (d.SuspectTimeout / 2).String()})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "HA timing") {
		t.Fatalf("incoherent HA timing: %v", err)
	}
	if len(meta.setCalls) != 1 {
		t.Fatalf("%d writes, want 1", len(meta.setCalls))
	}
	// Without quorum nothing is written.
	meta.quorum = consensus.ErrNoQuorum
	if _, err := m.SetConfig(context.Background(), map[string]string{"resync.rate": "1M"}); status.Code(err) != codes.FailedPrecondition || len(meta.setCalls) != 1 {
		t.Fatalf("without quorum: %v, %d writes", err, len(meta.setCalls))
	}
}

func TestCreateToken(t *testing.T) {
	meta := newFakeMeta()
	m, _ := newManager(t, meta, true)
	if _, err := m.CreateToken(context.Background(), 8*24*time.Hour); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ttl over a week: %v", err)
	}
	resp, err := m.CreateToken(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(meta.tokens) != 1 || meta.tokens[0].ID != resp.TokenId || !resp.ExpiresAt.AsTime().Equal(time.Unix(1_800_000_000, 0).Add(time.Hour)) {
		t.Fatalf("token %+v recorded %+v", resp, meta.tokens)
	}
	meta.quorum = consensus.ErrNoQuorum
	if _, err := m.CreateToken(context.Background(), time.Minute); err == nil || len(meta.tokens) != 1 {
		t.Fatalf("without quorum: %v, %d tokens", err, len(meta.tokens))
	}
	out, _ := newManager(t, meta, false)
	if _, err := out.CreateToken(context.Background(), time.Minute); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("outside a cluster: %v", err)
	}
}

func testCA(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.NewCA("lab", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM()
}
