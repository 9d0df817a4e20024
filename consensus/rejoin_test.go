package consensus

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// TestRejoin: a rejoin consumes a token like a join, keeps the node's
// record (replica, role, addresses, state) and adds the new serial;
// refusals (bad, used or expired token, unknown, removed or other-replica
// node) change nothing, and travel through the result code with their
// text.
func TestRejoin(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	index := uint64(0)
	// update applies c as a committed entry would, result code included.
	update := func(c Command) (*NodeRecord, error) {
		t.Helper()
		c.At, c.By = at, "n1"
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		index++
		res, err := m.Update(sm.Entry{Index: index, Cmd: b})
		if err != nil {
			t.Fatal(err)
		}
		if err := resultError(resultErrors, res); err != nil {
			return nil, err
		}
		var n NodeRecord
		if c.Op == opNodeRejoin {
			if err := json.Unmarshal(res.Data, &n); err != nil {
				t.Fatalf("%s result: %v", c.Op, err)
			}
		}
		return &n, nil
	}
	must := func(c Command) *NodeRecord {
		t.Helper()
		n, err := update(c)
		if err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
		return n
	}
	token := func(id string, ttl time.Duration) {
		must(Command{Op: opAddToken, Token: &TokenRecord{ID: id, Verifier: "v-" + id, ExpiresAt: at.Add(ttl)}})
	}
	must(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1, CertSerials: []string{"a1"}}}})
	for _, n := range []string{"n2", "n3"} {
		token("j"+n, time.Hour)
		must(Command{Op: opJoin, Join: &JoinCmd{TokenID: "j" + n, Verifier: "v-j" + n, Node: NodeRecord{Name: n, Role: "data", RaftAddr: n + ":1", BackendAddr: n + ":0", CertSerials: []string{n + "0"}}}})
		must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: n, State: NodeMember}})
	}
	must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n3", State: NodeRemoved}})
	n2 := *m.s.Nodes["n2"]
	token("t", time.Hour)
	token("old", time.Minute)

	rejoin := func(tokenID, verifier, name string, replica uint64, serial string) Command {
		return Command{Op: opNodeRejoin, Rejoin: &RejoinCmd{TokenID: tokenID, Verifier: verifier, Name: name, ReplicaID: replica, Serial: serial, NotAfter: at.Add(time.Minute)}}
	}
	refusals := []struct {
		name string
		cmd  Command
		want error
		text string
	}{
		{"unknown token", rejoin("nope", "v-t", "n2", 2, "b1"), ErrTokenInvalid, ""},
		{"wrong secret", rejoin("t", "v-x", "n2", 2, "b1"), ErrTokenInvalid, ""},
		{"unknown node", rejoin("t", "v-t", "n9", 2, "b1"), ErrNodeNotFound, "n9 is not a node of this cluster"},
		{"removed node", rejoin("t", "v-t", "n3", 3, "b1"), ErrCertRevoked, "node n3 was removed from the cluster, so it cannot rejoin; wipe its data directory and join it as a new node"},
		{"other replica", rejoin("t", "v-t", "n2", 7, "b1"), ErrNodeNotFound, "holds replica 7"},
		{"no serial", rejoin("t", "v-t", "n2", 2, ""), ErrBadCommand, ""},
		{"upper-case serial", rejoin("t", "v-t", "n2", 2, "B1"), ErrBadCommand, ""},
	}
	check := func(name string, cmd Command, want error, text string) {
		t.Helper()
		before, _ := json.Marshal(m.s)
		_, err := update(cmd)
		if !errors.Is(err, want) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: got %v, want %v %q", name, err, want, text)
		}
		after, _ := json.Marshal(m.s)
		// Only the applied index moves.
		var b, a MetaState
		_ = json.Unmarshal(before, &b)
		_ = json.Unmarshal(after, &a)
		b.Applied, a.Applied = 0, 0
		bj, _ := json.Marshal(b)
		aj, _ := json.Marshal(a)
		if string(bj) != string(aj) {
			t.Errorf("%s: a refused rejoin changed the state", name)
		}
	}
	for _, r := range refusals {
		check(r.name, r.cmd, r.want, r.text)
	}
	at = at.Add(2 * time.Minute)
	check("expired token", rejoin("old", "v-old", "n2", 2, "b1"), ErrTokenExpired, "")

	got := must(rejoin("t", "v-t", "n2", 2, "b1"))
	want := n2
	want.CertSerials = []string{"n20", "b1"}
	want.CertNotAfter = at.Add(time.Minute)
	if gj, wj := mustJSON(t, got), mustJSON(t, &want); gj != wj {
		t.Fatalf("record after rejoin:\n%s\nwant\n%s", gj, wj)
	}
	if tok := m.s.Tokens["t"]; tok.UsedBy != "n2" || !tok.UsedAt.Equal(at) {
		t.Fatalf("token after rejoin: %+v", tok)
	}
	audits := len(m.s.Audit)
	if a := m.s.Audit[audits-1]; a.Action != "node-rejoin" || !strings.Contains(a.Detail, "serial b1") {
		t.Fatalf("audit %+v", a)
	}
	if err := m.s.checkCert(CertRef{Serial: "b1", CommonName: "n2", OU: "node"}); err != nil {
		t.Fatalf("the new certificate is refused: %v", err)
	}
	// A proposal retried after a timeout is the same answer, once audited.
	if again := must(rejoin("t", "v-t", "n2", 2, "b1")); !slices.Equal(again.CertSerials, want.CertSerials) || len(m.s.Audit) != audits {
		t.Fatalf("retried rejoin: %+v, %d audit entries (was %d)", again, len(m.s.Audit), audits)
	}
	// The token is used: another certificate with it is refused.
	check("used token", rejoin("t", "v-t", "n2", 2, "b2"), ErrTokenUsed, "by n2")

	// Old serials go as renewals push them out, like a renewal's.
	for _, s := range []string{"b2", "b3", "b4"} {
		token("t"+s, time.Hour)
		must(rejoin("t"+s, "v-t"+s, "n2", 2, s))
	}
	if got := m.s.Nodes["n2"].CertSerials; !slices.Equal(got, []string{"b2", "b3", "b4"}) {
		t.Fatalf("serials %v, want the last %d", got, keepCertSerials)
	}
}

// TestCheckRejoinRead: the read-only pre-check gives the state machine's
// verdict and a copy of the record, and changes nothing.
func TestCheckRejoinRead(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, c := range []Command{
		{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1, CertSerials: []string{"a1"}, Fence: &FenceConfig{}}}},
		{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}},
	} {
		c.At = at
		if _, err := m.checkedApply(&c); err != nil {
			t.Fatal(err)
		}
	}
	before := mustJSON(t, m.s)
	ask := func(r RejoinCmd) rejoinVerdict {
		v, err := m.Lookup(rejoinQuery{rejoin: r, at: at})
		if err != nil {
			t.Fatal(err)
		}
		return v.(rejoinVerdict)
	}
	ok := ask(RejoinCmd{TokenID: "t", Verifier: "v", Name: "n1", ReplicaID: 1})
	if ok.err != nil || ok.node.ReplicaID != 1 || ok.node.Fence != nil || !slices.Equal(ok.node.CertSerials, []string{"a1"}) {
		t.Fatalf("verdict %+v", ok)
	}
	ok.node.CertSerials[0] = "changed"
	if bad := ask(RejoinCmd{TokenID: "t", Verifier: "x", Name: "n1", ReplicaID: 1}); !errors.Is(bad.err, ErrTokenInvalid) {
		t.Fatalf("bad token: %v", bad.err)
	}
	if mustJSON(t, m.s) != before {
		t.Fatal("a read changed the state")
	}
}

// TestCertView: a member's view checks certificates as its state does.
func TestCertView(t *testing.T) {
	s := emptyState()
	s.Cluster.ID = "c1"
	s.Nodes["n1"] = &NodeRecord{Name: "n1", State: NodeMember, CertSerials: []string{"a1", "a2"}}
	s.Nodes["n2"] = &NodeRecord{Name: "n2", State: NodeRemoved, CertSerials: []string{"b1"}}
	s.Revoked = map[string]*RevokedCert{"b1": {Serial: "b1"}, "e1": {Serial: "e1"}}
	s.Applied = 17
	nodes, revoked, applied := CertViewOf(s)
	v := NewCertView(nodes, revoked, applied)
	if v.Applied != 17 {
		t.Fatalf("applied %d", v.Applied)
	}
	for _, ref := range []CertRef{
		{Serial: "a1", CommonName: "n1", OU: "node"},
		{Serial: "a2", CommonName: "n1", OU: "node"},
		{Serial: "a9", CommonName: "n1", OU: "node"}, // never issued
		{Serial: "b1", CommonName: "n2", OU: "node"}, // removed
		{Serial: "b7", CommonName: "n2", OU: "node"},
		{Serial: "x1", CommonName: "admin@n2", OU: "admin"},
		{Serial: "e1", CommonName: "backup", OU: "export"},
		{Serial: "c1", CommonName: "n9", OU: "node"}, // unknown: passes
	} {
		want, got := s.checkCert(ref), v.CheckCert(ref)
		if (want == nil) != (got == nil) {
			t.Errorf("%+v: view says %v, state says %v", ref, got, want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
