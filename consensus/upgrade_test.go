package consensus

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// upgradeReplicas are two replicas of one cluster of nodes a, b and c, one
// built at protocol level 1 (the older release) and one at level 2, fed the
// same entries the way Raft would.
type upgradeReplicas struct {
	t        *testing.T
	old, new *metaSM
	index    uint64
	at       time.Time
}

func newUpgradeReplicas(t *testing.T) *upgradeReplicas {
	r := &upgradeReplicas{t: t, old: &metaSM{s: emptyState(), level: 1}, new: &metaSM{s: emptyState(), level: 2}, at: time.Now().UTC()}
	r.must(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c", Name: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}})
	for _, n := range []string{"b", "c"} {
		r.must(Command{Op: opAddToken, Token: &TokenRecord{ID: "t" + n, Verifier: "v" + n, ExpiresAt: r.at.Add(time.Hour)}})
		r.must(Command{Op: opJoin, Join: &JoinCmd{TokenID: "t" + n, Verifier: "v" + n, Node: NodeRecord{Name: n}}})
		r.must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: n, State: NodeMember}})
	}
	for _, n := range []string{"a", "b", "c"} {
		r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: n, Version: "v1", Protocol: 1}})
	}
	return r
}

// update feeds c to both replicas as one entry and returns their results
// (a refusal decoded as an error) and whether each halted.
func (r *upgradeReplicas) update(c Command) (oldErr, newErr error, oldHalt, newHalt error) {
	r.t.Helper()
	c.At = r.at
	c.By = "a"
	if l := opLevel(c.Op); l > BaseClusterVersion {
		c.Level = l // as Meta.propose sets it
	}
	b, err := json.Marshal(c)
	if err != nil {
		r.t.Fatal(err)
	}
	r.index++
	one := func(m *metaSM) (error, error) {
		res, err := m.Update(sm.Entry{Index: r.index, Cmd: b})
		if err != nil {
			return nil, err
		}
		return resultError(resultErrors, res), nil
	}
	oldErr, oldHalt = one(r.old)
	newErr, newHalt = one(r.new)
	return
}

func (r *upgradeReplicas) must(c Command) {
	r.t.Helper()
	o, n, oh, nh := r.update(c)
	if o != nil || n != nil || oh != nil || nh != nil {
		r.t.Fatalf("%s: old %v / %v, new %v / %v", c.Op, o, oh, n, nh)
	}
}

// same checks that both replicas hold the same state.
func (r *upgradeReplicas) same() {
	r.t.Helper()
	a, _ := json.Marshal(r.old.s)
	b, _ := json.Marshal(r.new.s)
	if string(a) != string(b) {
		r.t.Fatalf("replicas diverged:\nold %s\nnew %s", a, b)
	}
}

// TestClusterVersionGate: a feature's command is refused alike by an older
// and a newer replica (nothing diverges) until every node reports the new
// level; the cluster version then rises in that very entry, and the feature
// works on the newer replicas.
func TestClusterVersionGate(t *testing.T) {
	r := newUpgradeReplicas(t)
	if v := r.new.s.Version(); v != 1 || r.new.s.Nodes["b"].Version != "v1" {
		t.Fatalf("cluster version %d, b %+v", v, r.new.s.Nodes["b"])
	}
	note := Command{Op: opNodeNote, NodeNote: &NodeNoteCmd{Name: "a", Note: "rack 3"}}
	r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "a", Version: "v2", Protocol: 2}})
	r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "b", Version: "v2", Protocol: 2}})
	o, n, oh, nh := r.update(note)
	if oh != nil || nh != nil || !errors.Is(o, ErrBadCommand) || !errors.Is(n, ErrBadCommand) || o.Error() != n.Error() {
		t.Fatalf("gated command: old %v / %v, new %v / %v", o, oh, n, nh)
	}
	for _, want := range []string{"node-notes needs cluster version 2", "c (v1, protocol 1)"} {
		if !strings.Contains(n.Error(), want) {
			t.Fatalf("refusal %q does not say %q", n, want)
		}
	}
	if strings.Contains(n.Error(), "a (") || r.new.s.Nodes["a"].Note != "" {
		t.Fatalf("refusal names an upgraded node or applied: %v %+v", n, r.new.s.Nodes["a"])
	}
	r.same()
	// The old replica stops being a member's replica here (c upgrades):
	// its last entry raises the version like everyone's.
	r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "c", Version: "v2", Protocol: 2}})
	r.same()
	if v := r.new.s.Version(); v != 2 {
		t.Fatalf("cluster version after the last node reported 2: %d", v)
	}
	if a := r.new.s.Audit[len(r.new.s.Audit)-1]; a.Action != "cluster-version" || !strings.Contains(a.Detail, "1 -> 2") || !strings.Contains(a.Detail, "node-notes") {
		t.Fatalf("last audit entry: %+v", a)
	}
	// Now the feature applies on the new replica; the old one, which can
	// no longer be a member, stops rather than skip it.
	o, n, oh, nh = r.update(note)
	if n != nil || nh != nil || r.new.s.Nodes["a"].Note != "rack 3" {
		t.Fatalf("note after the upgrade: %v / %v, a %+v", n, nh, r.new.s.Nodes["a"])
	}
	if oh == nil || o != nil || !strings.Contains(oh.Error(), "needs protocol level 2") || !strings.Contains(oh.Error(), "stops applying") {
		t.Fatalf("older replica meeting an unknown command: refusal %v, halt %v", o, oh)
	}
	if r.old.s.Nodes["a"].Note != "" {
		t.Fatal("the older replica applied a command it does not know")
	}
	// A node cannot come back below the cluster version.
	_, n, _, _ = r.update(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "b", Version: "v1", Protocol: 1}})
	if !errors.Is(n, ErrFeatureGated) && !errors.Is(n, ErrBadCommand) || !strings.Contains(n.Error(), "below the cluster version") || r.new.s.Nodes["b"].Protocol != 2 {
		t.Fatalf("downgrade record: %v, b %+v", n, r.new.s.Nodes["b"])
	}
}

// TestClusterVersionRemoval: removing the last node on the older release
// raises the cluster version; a node that never reported holds it back.
func TestClusterVersionRemoval(t *testing.T) {
	r := newUpgradeReplicas(t)
	r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "a", Version: "v2", Protocol: 2}})
	r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: "b", Version: "v2", Protocol: 2}})
	r.new.s.Nodes["d"] = &NodeRecord{Name: "d", State: NodeJoining}
	r.old.s.Nodes["d"] = &NodeRecord{Name: "d", State: NodeJoining}
	r.must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "c", State: NodeRemoved}})
	if v := r.new.s.Version(); v != 1 {
		t.Fatalf("cluster version with a node that never reported: %d", v)
	}
	if b := r.new.s.Behind(2); len(b) != 1 || b[0].Name != "d" {
		t.Fatalf("behind: %+v", b)
	}
	r.must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "d", State: NodeRemoved}})
	if v := r.new.s.Version(); v != 2 {
		t.Fatalf("cluster version after removing the older nodes: %d", v)
	}
	r.same()
}

// TestUnknownOpSameLevel: an op no replica knows, at a level the cluster
// allows, is refused alike by all (a malformed command), as before.
func TestUnknownOpSameLevel(t *testing.T) {
	r := newUpgradeReplicas(t)
	o, n, oh, nh := r.update(Command{Op: "no-such-op"})
	if oh != nil || nh != nil || !errors.Is(o, ErrBadCommand) || !errors.Is(n, ErrBadCommand) {
		t.Fatalf("unknown op: old %v / %v, new %v / %v", o, oh, n, nh)
	}
	// A future command above the cluster version is refused alike too,
	// even by a replica that has never heard of it.
	o, n, oh, nh = r.update(Command{Op: "future-op", Level: 3})
	if oh != nil || nh != nil || !errors.Is(o, ErrFeatureGated) && !errors.Is(o, ErrBadCommand) || o.Error() != n.Error() || !strings.Contains(o.Error(), "needs cluster version 3") {
		t.Fatalf("future op: old %v / %v, new %v / %v", o, oh, n, nh)
	}
	r.same()
}

// TestClusterVersionSnapshot: the cluster version and the nodes' versions
// survive a snapshot.
func TestClusterVersionSnapshot(t *testing.T) {
	r := newUpgradeReplicas(t)
	for _, n := range []string{"a", "b", "c"} {
		r.must(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: n, Version: "v2", Protocol: 2}})
	}
	var buf strings.Builder
	if err := r.new.SaveSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	m := &metaSM{s: emptyState(), level: 2}
	if err := m.RecoverFromSnapshot(strings.NewReader(buf.String()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if m.s.Version() != 2 || m.s.Nodes["c"].Version != "v2" || m.s.Nodes["c"].Protocol != 2 {
		t.Fatalf("after snapshot: version %d, c %+v", m.s.Version(), m.s.Nodes["c"])
	}
}

// TestReleaseInBootstrapAndJoin: a creator's and a joining node's release
// go into the bootstrap and join entries, so that the node-version entry
// each would propose at its first start finds nothing to change. A level-2
// creator starts its cluster at version 2.
func TestReleaseInBootstrapAndJoin(t *testing.T) {
	for _, level := range []uint32{1, 2} {
		m := &metaSM{s: emptyState(), level: 2}
		at := time.Now().UTC()
		apply := func(c Command) []byte {
			t.Helper()
			c.At, c.By = at, "a"
			res, err := m.apply(&c)
			if err != nil {
				t.Fatalf("%s: %v", c.Op, err)
			}
			return res
		}
		apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c", Name: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1, Version: "v", Protocol: level}}})
		if v := m.s.Version(); v != level {
			t.Fatalf("creator at level %d: cluster version %d", level, v)
		}
		apply(Command{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}})
		apply(Command{Op: opJoin, Join: &JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "b", Version: "v", Protocol: level}}})
		audits := len(m.s.Audit)
		for _, n := range []string{"a", "b"} {
			apply(Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: n, Version: "v", Protocol: level}})
		}
		if len(m.s.Audit) != audits || m.s.Version() != level {
			t.Fatalf("level %d: recording the same release changed the state: audit %d -> %d, version %d", level, audits, len(m.s.Audit), m.s.Version())
		}
	}
}
