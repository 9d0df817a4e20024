package consensus

import (
	"bytes"
	"encoding/json"
	"reflect"

	"context"
	"errors"
	"fmt"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	QuietLogs()
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type testHost struct {
	name, dir, addr string
	h               *Host
	meta            *Meta
	// with, when set, adjusts the host's configuration (TLS, ticks).
	with func(*HostConfig)
}

func (th *testHost) open(t *testing.T, snapEntries uint64) {
	t.Helper()
	cfg := HostConfig{Dir: th.dir, RaftAddr: th.addr, SnapshotEntries: snapEntries, CheckMetaReaders: true}
	if th.with != nil {
		th.with(&cfg)
	}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatalf("%s: %v", th.name, err)
	}
	th.h = h
	th.meta = NewMeta(h, th.name)
}

func (th *testHost) close() {
	if th.h != nil {
		th.h.Close()
		th.h = nil
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newCluster bootstraps a metadata shard on hosts[0] and joins the others the
// way tandemd does: consume a token, add the replica, start it with Join.
func newCluster(t *testing.T, n int, snapEntries uint64) []*testHost {
	t.Helper()
	return newClusterWith(t, n, snapEntries, nil)
}

// newClusterWith is newCluster with every host's configuration adjusted
// by with.
func newClusterWith(t *testing.T, n int, snapEntries uint64, with func(*HostConfig)) []*testHost {
	t.Helper()
	base := t.TempDir()
	hosts := make([]*testHost, n)
	for i := range hosts {
		hosts[i] = &testHost{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)), addr: freeAddr(t), with: with}
		hosts[i].open(t, snapEntries)
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.close()
		}
	})
	h1 := hosts[0]
	if err := h1.meta.Start(1, map[uint64]string{1: h1.addr}, false, Voter); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 20*time.Second)
	if err := h1.meta.Bootstrap(ctx, ClusterRecord{Name: "test", ID: "cid"}, NodeRecord{Name: "n1", ReplicaID: 1, RaftAddr: h1.addr}); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	for _, th := range hosts[1:] {
		tok := TokenRecord{ID: "tok-" + th.name, Verifier: "v-" + th.name, ExpiresAt: time.Now().Add(time.Hour)}
		if err := h1.meta.AddToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		id, err := h1.meta.Join(ctx, tok.ID, tok.Verifier, NodeRecord{Name: th.name, RaftAddr: th.addr})
		if err != nil {
			t.Fatalf("join %s: %v", th.name, err)
		}
		if err := h1.h.AddReplica(ctx, MetaShardID, id, th.addr, Voter); err != nil {
			t.Fatalf("add replica %s: %v", th.name, err)
		}
		if err := th.meta.Start(id, nil, true, Voter); err != nil {
			t.Fatal(err)
		}
		if _, err := h1.meta.SetNodeState(ctx, th.name, NodeMember); err != nil {
			t.Fatal(err)
		}
	}
	return hosts
}

func TestMetadataShardJoinQuorumAndRestart(t *testing.T) {
	hosts := newCluster(t, 3, 5)
	ctx := ctxT(t, 30*time.Second)

	// Every replica sees the same committed membership.
	st, err := hosts[2].meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 || st.Nodes["n3"].State != NodeMember || st.Nodes["n3"].ReplicaID != 3 {
		t.Fatalf("unexpected nodes: %+v", st.Nodes)
	}
	m, err := hosts[1].h.Membership(ctx, MetaShardID)
	if err != nil || len(m.Voters) != 3 {
		t.Fatalf("membership %+v, %v", m, err)
	}

	// Tokens are one-time; a wrong verifier is refused; nothing changes.
	_, err = hosts[0].meta.Join(ctx, "tok-n2", "v-n2", NodeRecord{Name: "n9"})
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("reused token: got %v", err)
	}
	if err := hosts[0].meta.AddToken(ctx, TokenRecord{ID: "t2", Verifier: "good", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err = hosts[1].meta.Join(ctx, "t2", "bad", NodeRecord{Name: "n9"}); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("wrong verifier: got %v", err)
	}
	if _, err = hosts[1].meta.Join(ctx, "t2", "good", NodeRecord{Name: "n2"}); !errors.Is(err, ErrNodeExists) {
		t.Fatalf("duplicate name: got %v", err)
	}
	if err := hosts[0].meta.AddToken(ctx, TokenRecord{ID: "t3", Verifier: "x", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err = hosts[1].meta.Join(ctx, "t3", "x", NodeRecord{Name: "n9"}); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token: got %v", err)
	}
	after, err := hosts[0].meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Nodes) != 3 || after.Tokens["t2"].UsedBy != "" {
		t.Fatalf("refused joins changed state: %+v", after.Nodes)
	}

	// Enough entries to force snapshots (SnapshotEntries=5).
	for i := range 20 {
		if err := hosts[i%3].meta.SetConfig(ctx, map[string]string{fmt.Sprintf("k%d", i): "v"}); err != nil {
			t.Fatal(err)
		}
	}

	// Two of three down: no quorum, and the survivor says so promptly.
	hosts[1].close()
	hosts[2].close()
	qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = hosts[0].h.CheckQuorum(qctx, MetaShardID)
	cancel()
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("quorum check without majority: got %v", err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = hosts[0].meta.SetConfig(pctx, map[string]string{"lost": "v"})
	cancel()
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("propose without majority: got %v", err)
	}
	// Local state still answers.
	local, err := hosts[0].meta.LocalState()
	if err != nil || len(local.Nodes) != 3 {
		t.Fatalf("local state: %v %v", local, err)
	}

	// Restart everyone from disk: state comes back from snapshot + log.
	hosts[0].close()
	for i, th := range hosts {
		th.open(t, 5)
		if err := th.meta.Start(uint64(i+1), nil, false, Voter); err != nil {
			t.Fatalf("restart %s: %v", th.name, err)
		}
	}
	st, err = hosts[1].meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 || st.Config["k19"] != "v" || st.Cluster.Name != "test" {
		t.Fatalf("state lost across restart: nodes=%d config=%v", len(st.Nodes), st.Config)
	}
	if _, ok := st.Config["lost"]; ok {
		// It was never acknowledged, but it may have been appended on the
		// lone leader's log and committed later; both are allowed by Raft.
		t.Log("unacknowledged proposal committed after quorum returned (allowed)")
	}
	if err := hosts[2].meta.SetConfig(ctx, map[string]string{"after": "restart"}); err != nil {
		t.Fatal(err)
	}
}

func TestWitnessKeepsTwoReplicaShardQuorate(t *testing.T) {
	hosts := newCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	const vol = 100
	members := map[uint64]string{1: hosts[0].addr, 2: hosts[1].addr}
	for i, th := range hosts[:2] {
		if err := th.h.StartShard(ShardSpec{ShardID: vol, ReplicaID: uint64(i + 1), Members: members}, NewMetaStateMachine); err != nil {
			t.Fatal(err)
		}
	}
	if err := hosts[0].h.AddReplica(ctx, vol, 3, hosts[2].addr, Witness); err != nil {
		t.Fatal(err)
	}
	if err := hosts[2].h.StartShard(ShardSpec{ShardID: vol, ReplicaID: 3, Join: true, Role: Witness}, NewMetaStateMachine); err != nil {
		t.Fatal(err)
	}
	m, err := hosts[0].h.Membership(ctx, vol)
	if err != nil || len(m.Witnesses) != 1 || len(m.Voters) != 2 {
		t.Fatalf("membership %+v %v", m, err)
	}
	cmd := []byte(`{"op":"bootstrap","bootstrap":{"cluster":{"id":"v","name":"v"},"node":{"name":"a","replica_id":1}}}`)
	if _, err := hosts[0].h.Propose(ctx, vol, cmd); err != nil {
		t.Fatal(err)
	}
	// One data replica gone: the other plus the witness still commit.
	if err := hosts[1].h.StopShard(vol); err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].h.CheckQuorum(ctx, vol); err != nil {
		t.Fatalf("quorum with data replica + witness: %v", err)
	}
	// And without the witness too: no quorum.
	if err := hosts[2].h.StopShard(vol); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := hosts[0].h.CheckQuorum(qctx, vol); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("one of three: got %v", err)
	}
}

func TestCorruptSnapshotRefused(t *testing.T) {
	m := checkedSM(t)
	for _, in := range []string{"", "{", `{"nodes":null}`, "[1,2]"} {
		if err := m.RecoverFromSnapshot(strings.NewReader(in), nil, nil); err == nil {
			t.Errorf("snapshot %q accepted", in)
		}
	}
}

func TestForceMembershipAfterLosingMajority(t *testing.T) {
	hosts := newCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	if err := hosts[0].meta.SetConfig(ctx, map[string]string{"keep": "me"}); err != nil {
		t.Fatal(err)
	}
	// Wait until n1 has applied it locally (it may be a follower).
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := hosts[0].meta.LocalState()
		if err == nil && st.Config["keep"] == "me" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n1 never applied the config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hosts[1].close()
	hosts[2].close()
	snap, err := hosts[0].h.ExportSnapshot(ctx, MetaShardID, filepath.Join(t.TempDir(), "export"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := hosts[0].h.cfg
	hosts[0].close()
	if err := ForceMembership(cfg, snap, map[uint64]string{1: hosts[0].addr}, 1); err != nil {
		t.Fatal(err)
	}
	hosts[0].open(t, 0)
	if err := hosts[0].meta.Start(1, nil, false, Voter); err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].meta.SetConfig(ctx, map[string]string{"after": "override"}); err != nil {
		t.Fatalf("single survivor should be quorate after the override: %v", err)
	}
	st, err := hosts[0].meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Config["keep"] != "me" || len(st.Nodes) != 3 {
		t.Fatalf("state lost by the override: %+v", st.Config)
	}
	m, err := hosts[0].h.Membership(ctx, MetaShardID)
	if err != nil || len(m.Voters) != 1 {
		t.Fatalf("membership after override: %+v %v", m, err)
	}
}

// Proposals may be retried after a timeout and commit twice; the commands
// that are not naturally idempotent must give the same answer again.
func TestRetriedProposalsAreIdempotent(t *testing.T) {
	m := checkedSM(t)
	at := time.Now()
	apply := func(c Command) ([]byte, error) {
		c.At = at
		return m.checkedApply(&c)
	}
	boot := Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}}
	for range 2 {
		if _, err := apply(boot); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	other := boot
	other.Bootstrap = &BootstrapCmd{Cluster: ClusterRecord{ID: "c2"}, Node: NodeRecord{Name: "x"}}
	if _, err := apply(other); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("second cluster bootstrap: %v", err)
	}
	if _, err := apply(Command{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	join := Command{Op: opJoin, Join: &JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n2", RaftAddr: "a:1"}}}
	first, err := apply(join)
	if err != nil {
		t.Fatal(err)
	}
	again, err := apply(join)
	if err != nil || string(again) != string(first) {
		t.Fatalf("retried join: %s vs %s, %v", again, first, err)
	}
	thief := join
	thief.Join = &JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n3", RaftAddr: "b:1"}}
	if _, err := apply(thief); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("token reuse by another node: %v", err)
	}
}

func FuzzMetaCommand(f *testing.F) {
	f.Add([]byte(`{"op":"bootstrap","bootstrap":{"cluster":{"id":"c","name":"c"},"node":{"name":"n1","replica_id":1}}}`))
	f.Add([]byte(`{"op":"join","join":{"token_id":"t","verifier":"v","node":{"name":"n2"}}}`))
	f.Add([]byte(`{"op":"node-state","node_state":{"name":"n1","state":"removed"}}`))
	f.Add([]byte(`{"op":"set-config","set_config":{"a":"b"}}`))
	f.Add([]byte(`{"op":"revoke-cert","revoke":{"serial":"ab","subject":"CN=x"}}`))
	f.Add([]byte(`{"op":"node-rejoin","rejoin":{"token_id":"t","verifier":"v","name":"n1","replica_id":1,"serial":"ab"}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, cmd []byte) {
		m := checkedSM(t)
		boot := []byte(`{"op":"bootstrap","bootstrap":{"cluster":{"id":"c","name":"c"},"node":{"name":"n1","replica_id":1}}}`)
		if _, err := m.Update(sm.Entry{Index: 1, Cmd: boot}); err != nil {
			t.Fatal(err)
		}
		before := m.s.clone()
		res, err := m.Update(sm.Entry{Index: 2, Cmd: cmd})
		if err != nil {
			t.Fatalf("Update returned an error (would stop the replica): %v", err)
		}
		if res.Value != 0 {
			// A refused command changes nothing but the applied index.
			before.Applied = 2
			if !reflect.DeepEqual(before, m.s) {
				t.Fatalf("refused command %q changed the state", cmd)
			}
		}
		var buf bytes.Buffer
		if err := m.SaveSnapshot(&buf, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := (checkedSM(t)).RecoverFromSnapshot(&buf, nil, nil); err != nil {
			t.Fatalf("snapshot does not round-trip: %v", err)
		}
	})
}

func TestVolumeCatalog(t *testing.T) {
	m := checkedSM(t)
	at := time.Now()
	apply := func(c Command) ([]byte, error) {
		c.At = at
		return m.checkedApply(&c)
	}
	if _, err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	m.s.Nodes["b"] = &NodeRecord{Name: "b", State: NodeMember}
	create := Command{Op: opVolumeCreate, Volume: &VolumeEntry{Name: "v1", Size: 1 << 30, Replicas: []string{"a", "b"}}}
	out, err := apply(create)
	if err != nil {
		t.Fatal(err)
	}
	if m.s.Volumes["v1"].ShardID != FirstVolumeShard || m.s.Volumes["v1"].State != VolumeCreating {
		t.Fatalf("entry: %+v", m.s.Volumes["v1"])
	}
	again, err := apply(create)
	if err != nil || string(again) != string(out) {
		t.Fatalf("retried create: %v", err)
	}
	at = at.Add(time.Second)
	if _, err := apply(create); !errors.Is(err, ErrVolumeNameTaken) {
		t.Fatalf("duplicate name: %v", err)
	}
	bad := Command{Op: opVolumeCreate, Volume: &VolumeEntry{Name: "v2", Size: 1, Replicas: []string{"a", "ghost"}}}
	if _, err := apply(bad); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("replica on a non-member: %v", err)
	}
	if _, err := apply(Command{Op: opVolumeState, Volume: &VolumeEntry{Name: "v1", State: VolumeReady}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "v1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "v1"}}); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("delete twice: %v", err)
	}
}

// The join pre-check (a read, no entry) and the join itself (applied)
// agree on every refusal, and the pre-check changes nothing.
func TestJoinCheckAgreesWithJoin(t *testing.T) {
	at := time.Now()
	m := checkedSM(t)
	if v, _ := m.Lookup(joinQuery{join: JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n2"}}, at: at}); !errors.Is(v.(joinVerdict).err, ErrNotBootstrapped) {
		t.Fatalf("check before bootstrap: %v", v)
	}
	for _, c := range []Command{
		{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}},
		{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}},
		{Op: opAddToken, Token: &TokenRecord{ID: "old", Verifier: "v", ExpiresAt: at.Add(-time.Minute)}},
		{Op: opAddToken, Token: &TokenRecord{ID: "used", Verifier: "v", ExpiresAt: at.Add(time.Hour)}},
		{Op: opJoin, Join: &JoinCmd{TokenID: "used", Verifier: "v", Node: NodeRecord{Name: "n3", RaftAddr: "c:1"}}},
	} {
		c.At = at
		if _, err := m.checkedApply(&c); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	}
	cases := []struct {
		name string
		j    JoinCmd
		want error
	}{
		{"unknown token", JoinCmd{TokenID: "nosuch", Verifier: "v", Node: NodeRecord{Name: "n2"}}, ErrTokenInvalid},
		{"wrong secret", JoinCmd{TokenID: "t", Verifier: "w", Node: NodeRecord{Name: "n2"}}, ErrTokenInvalid},
		{"expired", JoinCmd{TokenID: "old", Verifier: "v", Node: NodeRecord{Name: "n2"}}, ErrTokenExpired},
		{"used", JoinCmd{TokenID: "used", Verifier: "v", Node: NodeRecord{Name: "n2"}}, ErrTokenUsed},
		{"name taken", JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n1"}}, ErrNodeExists},
		{"no node", JoinCmd{TokenID: "t", Verifier: "v"}, ErrBadCommand},
		{"retried by its node", JoinCmd{TokenID: "used", Verifier: "v", Node: NodeRecord{Name: "n3", RaftAddr: "c:1"}}, nil},
		{"accepted", JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n2"}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := m.s.clone()
			was, _ := json.Marshal(m.s)
			v, err := m.Lookup(joinQuery{join: c.j, at: at})
			if err != nil {
				t.Fatal(err)
			}
			checked := v.(joinVerdict).err
			if now, _ := json.Marshal(m.s); !bytes.Equal(was, now) {
				t.Fatal("the check changed the state")
			}
			j := c.j
			_, applied := m.checkedApply(&Command{Op: opJoin, At: at, Join: &j})
			if (c.want == nil) != (checked == nil) || (c.want != nil && (!errors.Is(checked, c.want) || !errors.Is(applied, c.want))) || (checked == nil) != (applied == nil) {
				t.Fatalf("check %v, join %v, want %v", checked, applied, c.want)
			}
			m.s = before // every case starts from the same state
		})
	}
}
