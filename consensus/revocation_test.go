package consensus

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRevocationList(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	apply := func(c Command) error {
		c.At, c.By = at, "n1"
		_, err := m.checkedApply(&c)
		return err
	}
	must := func(c Command) {
		t.Helper()
		if err := apply(c); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	}
	must(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1, CertSerials: []string{"a1"}}}})
	must(Command{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}})
	join := Command{Op: opJoin, Join: &JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n2", RaftAddr: "a:1", CertSerials: []string{"b1"}}}}
	must(join)
	// A retried admission signed another certificate: both are the node's.
	join.Join.Node.CertSerials = []string{"b2"}
	must(join)
	must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n2", State: NodeMember}})

	check := func(ref CertRef) error { return m.s.checkCert(ref) }
	for _, tc := range []struct {
		ref     CertRef
		revoked bool
	}{
		{CertRef{Serial: "a1", CommonName: "n1", OU: "node"}, false},
		{CertRef{Serial: "b1", CommonName: "n2", OU: "node"}, false},
		{CertRef{Serial: "b2", CommonName: "n2", OU: "node"}, false},
		// Signed by the CA but never handed to n2 by the cluster.
		{CertRef{Serial: "ff", CommonName: "n2", OU: "node"}, true},
		// A node admitted a moment ago and not applied here yet.
		{CertRef{Serial: "cc", CommonName: "n9", OU: "node"}, false},
		{CertRef{Serial: "dd", CommonName: "admin@n2", OU: "admin"}, false},
	} {
		if err := check(tc.ref); (err != nil) != tc.revoked || (err != nil && !errors.Is(err, ErrCertRevoked)) {
			t.Errorf("%+v: got %v, want revoked=%v", tc.ref, err, tc.revoked)
		}
	}

	// Removal revokes every recorded serial and the node's admin certificate.
	must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n2", State: NodeRemoved}})
	for _, s := range []string{"b1", "b2"} {
		if _, ok := m.s.Revoked[s]; !ok {
			t.Errorf("serial %s of the removed node is not on the list: %v", s, m.s.Revoked)
		}
	}
	for _, ref := range []CertRef{{Serial: "b1", CommonName: "n2", OU: "node"}, {Serial: "dd", CommonName: "admin@n2", OU: "admin"}} {
		if err := check(ref); !errors.Is(err, ErrCertRevoked) {
			t.Errorf("%+v after removal: %v", ref, err)
		}
	}

	// The node joins again with a fresh certificate; the old ones stay out.
	must(Command{Op: opAddToken, Token: &TokenRecord{ID: "t2", Verifier: "v2", ExpiresAt: at.Add(time.Hour)}})
	must(Command{Op: opJoin, Join: &JoinCmd{TokenID: "t2", Verifier: "v2", Node: NodeRecord{Name: "n2", RaftAddr: "a:2", CertSerials: []string{"b3"}}}})
	if err := check(CertRef{Serial: "b3", CommonName: "n2", OU: "node"}); err != nil {
		t.Errorf("fresh certificate after rejoin: %v", err)
	}
	if err := check(CertRef{Serial: "b1", CommonName: "n2", OU: "node"}); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("old certificate after rejoin: %v", err)
	}

	// An explicit revocation; bad ones change nothing.
	before := m.s.clone()
	for _, bad := range []*RevokedCert{nil, {}, {Serial: "ABC"}} {
		if err := apply(Command{Op: opRevokeCert, Revoke: bad}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("revoke %+v: %v", bad, err)
		}
	}
	if len(before.Revoked) != len(m.s.Revoked) {
		t.Fatal("a refused revocation changed the list")
	}
	must(Command{Op: opRevokeCert, Revoke: &RevokedCert{Serial: "e1", Subject: "CN=backup,OU=export", Reason: "lost laptop", NotAfter: at.Add(time.Hour)}})
	if err := check(CertRef{Serial: "e1", CommonName: "backup", OU: "export"}); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("explicitly revoked: %v", err)
	}

	// The list survives a snapshot, and entries go once the certificate
	// would have expired anyway.
	var buf bytes.Buffer
	if err := m.SaveSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	r := checkedSM(t)
	if err := r.RecoverFromSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.s.checkCert(CertRef{Serial: "e1"}); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("after snapshot: %v", err)
	}
	at = at.Add(2 * time.Hour)
	must(Command{Op: opRevokeCert, Revoke: &RevokedCert{Serial: "e2"}})
	if _, ok := m.s.Revoked["e1"]; ok {
		t.Error("an expired certificate's entry was kept")
	}
}

// What revokes an accepted certificate (a serial on the list, a removed
// node) moves the generation listeners poll and is what checkRevoked
// refuses; a node certificate renewed out of its record does neither, so
// its open connections are left alone. The removal records who and when.
func TestCertGenerationAndCheckRevoked(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	must := func(c Command) {
		t.Helper()
		c.At, c.By, c.As = at, "n1", "alice"
		if _, err := m.checkedApply(&c); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	}
	gen := func() uint64 {
		v, err := m.Lookup(certGenQuery{})
		if err != nil {
			t.Fatal(err)
		}
		return v.(uint64)
	}
	revoked := func(ref CertRef) error {
		v, err := m.Lookup(certQuery{ref: ref, revokedOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err, _ = v.(error)
		return err
	}
	must(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c1", Name: "c"}, Node: NodeRecord{Name: "n1", ReplicaID: 1, CertSerials: []string{"a1"}}}})
	must(Command{Op: opAddToken, Token: &TokenRecord{ID: "t", Verifier: "v", ExpiresAt: at.Add(time.Hour)}})
	must(Command{Op: opJoin, Join: &JoinCmd{TokenID: "t", Verifier: "v", Node: NodeRecord{Name: "n2", RaftAddr: "a:1", CertSerials: []string{"b1"}}}})
	g0 := gen()

	// Three renewals push a1 out of n1's record: refused from now on, not
	// revoked.
	for _, s := range []string{"a2", "a3", "a4"} {
		must(Command{Op: opNodeCert, NodeCert: &NodeCertCmd{Name: "n1", Serial: s, NotAfter: at.Add(time.Hour)}})
	}
	old := CertRef{Serial: "a1", CommonName: "n1", OU: "node"}
	if err := m.s.checkCert(old); !errors.Is(err, ErrCertRevoked) {
		t.Fatalf("a serial renewed out of the record is accepted in a handshake: %v", err)
	}
	if err := revoked(old); err != nil || gen() != g0 {
		t.Fatalf("renewal counted as a revocation: %v, generation %d -> %d", err, g0, gen())
	}

	must(Command{Op: opRevokeCert, Revoke: &RevokedCert{Serial: "e1", Subject: "CN=x,OU=export", Reason: "test"}})
	g1 := gen()
	if g1 == g0 || !errors.Is(revoked(CertRef{Serial: "e1", CommonName: "x", OU: "export"}), ErrCertRevoked) {
		t.Fatalf("explicit revocation: generation %d -> %d", g0, g1)
	}
	must(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n2", State: NodeRemoved}})
	if gen() == g1 || !errors.Is(revoked(CertRef{Serial: "zz", CommonName: "admin@n2", OU: "admin"}), ErrCertRevoked) {
		t.Fatalf("removal: generation %d -> %d", g1, gen())
	}
	if n := m.s.Nodes["n2"]; n.RemovedBy != "n1" || n.RemovedAs != "alice" || !n.RemovedAt.Equal(at) {
		t.Fatalf("removal recorded as by %q as %q at %v", n.RemovedBy, n.RemovedAs, n.RemovedAt)
	}
	if err := revoked(CertRef{Serial: "a4", CommonName: "n1", OU: "node"}); err != nil {
		t.Fatalf("a member's current certificate: %v", err)
	}
}
