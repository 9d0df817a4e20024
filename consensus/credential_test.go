package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func hexOf(b byte) string { return strings.Repeat(string("0123456789abcdef"[b%16]), 64) }

func TestCredentials(t *testing.T) {
	m := checkedSM(t)
	at := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	apply := func(c Command) error {
		c.At = at
		c.By = "n1"
		_, err := m.checkedApply(&c)
		return err
	}
	// A bootstrap command carries the admin token's verifier the old way:
	// it becomes the admin credential "bootstrap", held by the first node.
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c", AdminTokenVerifiers: []string{hexOf(1)}}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	b := m.s.Credentials[BootstrapCredential]
	if b == nil || b.Role != RoleAdmin || b.Holder != "n1" || b.Verifier != hexOf(1) || len(m.s.Cluster.AdminTokenVerifiers) != 0 {
		t.Fatalf("bootstrap credential %+v, verifiers %v", b, m.s.Cluster.AdminTokenVerifiers)
	}
	var v [32]byte
	for i := range v {
		v[i] = 0x11
	}
	if c := m.s.CredentialByVerifier(v); c == nil || c.Name != BootstrapCredential {
		t.Fatalf("lookup by verifier: %+v", c)
	}

	create := func(name, role string, verifier byte, as string) error {
		return apply(Command{Op: opCredentialCreate, As: as, Credential: &CredentialCmd{Record: &CredentialRecord{Name: name, Role: role, Verifier: hexOf(verifier)}}})
	}
	for _, bad := range []struct{ name, role string }{{"", RoleAdmin}, {"x", "root"}, {"x", ""}} {
		if err := create(bad.name, bad.role, 2, ""); !errors.Is(err, ErrBadCommand) {
			t.Errorf("credential %q role %q: %v", bad.name, bad.role, err)
		}
	}
	if err := create("grafana", RoleReadonly, 2, "bootstrap"); err != nil {
		t.Fatal(err)
	}
	if g := m.s.Credentials["grafana"]; g.CreatedBy != "bootstrap" || !g.CreatedAt.Equal(at) || g.Revoked() {
		t.Fatalf("created %+v", g)
	}
	if err := create("grafana", RoleReadonly, 2, "bootstrap"); err != nil {
		t.Fatalf("a retried proposal: %v", err)
	}
	if err := create("grafana", RoleAdmin, 3, "bootstrap"); !errors.Is(err, ErrCredentialExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	// The audit trail names the credential that asked.
	last := m.s.Audit[len(m.s.Audit)-1]
	if last.Action != "credential-create" || last.Credential != "bootstrap" || last.Node != "n1" {
		t.Fatalf("audit %+v", last)
	}

	revoke := func(name string, force bool) error {
		return apply(Command{Op: opCredentialRevoke, As: "local@n1", Credential: &CredentialCmd{Name: name, Force: force}})
	}
	if err := revoke("nope", false); !errors.Is(err, ErrNoSuchCredential) {
		t.Fatalf("unknown: %v", err)
	}
	if err := revoke("grafana", false); err != nil {
		t.Fatal(err)
	}
	if g := m.s.Credentials["grafana"]; !g.Revoked() || g.RevokedBy != "local@n1" {
		t.Fatalf("revoked %+v", g)
	}
	if err := revoke("grafana", false); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if err := create("grafana", RoleReadonly, 4, ""); !errors.Is(err, ErrCredentialExists) {
		t.Fatalf("a revoked name is reused: %v", err)
	}
	// The last admin credential needs force.
	if err := revoke(BootstrapCredential, false); !errors.Is(err, ErrLastAdmin) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("last admin: %v", err)
	}
	if err := create("alice", RoleAdmin, 5, ""); err != nil {
		t.Fatal(err)
	}
	if err := revoke(BootstrapCredential, false); err != nil {
		t.Fatalf("bootstrap with another admin left: %v", err)
	}
	if err := revoke("alice", true); err != nil {
		t.Fatalf("last admin with force: %v", err)
	}
}

// Removing a node revokes the credentials handed to it, and only those.
func TestNodeRemovalRevokesItsCredentials(t *testing.T) {
	m := checkedSM(t)
	apply := func(c Command) error {
		c.At = time.Now()
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c", AdminTokenVerifiers: []string{hexOf(1)}}, Node: NodeRecord{Name: "n1", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	m.s.Nodes["n2"] = &NodeRecord{Name: "n2", State: NodeMember}
	if err := apply(Command{Op: opCredentialCreate, Credential: &CredentialCmd{Record: &CredentialRecord{Name: "ops", Role: RoleOperator, Verifier: hexOf(2)}}}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n2", State: NodeRemoved}}); err != nil {
		t.Fatal(err)
	}
	if m.s.Credentials[BootstrapCredential].Revoked() || m.s.Credentials["ops"].Revoked() {
		t.Fatal("removing n2 revoked credentials it did not hold")
	}
	if err := apply(Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: "n1", State: NodeRemoved}}); err != nil {
		t.Fatal(err)
	}
	if !m.s.Credentials[BootstrapCredential].Revoked() || m.s.Credentials["ops"].Revoked() {
		t.Fatalf("after removing n1: bootstrap %+v, ops %+v", m.s.Credentials[BootstrapCredential], m.s.Credentials["ops"])
	}
}

// A snapshot written before named credentials (admin_token_verifiers in the
// cluster record, no credentials) loads, its tokens as admin credentials.
func TestCredentialsFromOldSnapshot(t *testing.T) {
	old := `{"cluster":{"name":"lab","id":"cid","created_at":"2026-01-01T00:00:00Z","ca_fingerprint":"ff","admin_token_verifiers":["` + hexOf(1) + `","` + hexOf(2) + `"]},` +
		`"nodes":{"n1":{"name":"n1","replica_id":1,"state":"member"}},"tokens":{},"next_replica_id":2,"config":{},"audit":[],"applied":7}`
	m := checkedSM(t)
	if err := m.RecoverFromSnapshot(strings.NewReader(old), nil, nil); err != nil {
		t.Fatal(err)
	}
	b, a2 := m.s.Credentials[BootstrapCredential], m.s.Credentials["admin-2"]
	if b == nil || a2 == nil || b.Role != RoleAdmin || a2.Role != RoleAdmin || b.Verifier != hexOf(1) || a2.Verifier != hexOf(2) || b.Holder != "" {
		t.Fatalf("credentials %+v", m.s.Credentials)
	}
	if len(m.s.Cluster.AdminTokenVerifiers) != 0 {
		t.Fatalf("old verifiers kept: %v", m.s.Cluster.AdminTokenVerifiers)
	}
	// And the new format round-trips.
	var buf strings.Builder
	if err := m.SaveSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "admin_token_verifiers") {
		t.Fatalf("new snapshot still writes the old field: %s", buf.String())
	}
	m2 := checkedSM(t)
	if err := m2.RecoverFromSnapshot(strings.NewReader(buf.String()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(m2.s.Credentials) != 2 || m2.s.Credentials["admin-2"].Verifier != hexOf(2) {
		t.Fatalf("round trip: %+v", m2.s.Credentials)
	}
	// An old log's add-admin-token entry replays as a credential too.
	if _, err := m2.checkedApply(&Command{Op: opAddAdminToken, At: time.Now(), By: "n1", AdminToken: hexOf(3)}); err != nil {
		t.Fatal(err)
	}
	if c := m2.s.Credentials["admin-3"]; c == nil || c.Verifier != hexOf(3) {
		t.Fatalf("add-admin-token: %+v", m2.s.Credentials)
	}
}

// Through Raft: the proposer's credential (WithActor) reaches the audit
// trail of every replica.
func TestCredentialActorThroughRaft(t *testing.T) {
	hosts := newCluster(t, 1, 0)
	ctx := WithActor(ctxT(t, 30*time.Second), "alice")
	if err := hosts[0].meta.CreateCredential(ctx, CredentialRecord{Name: "ro", Role: RoleReadonly, Verifier: hexOf(9)}); err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].meta.RevokeCredential(ctxT(t, 30*time.Second), "ro", false); err != nil {
		t.Fatal(err)
	}
	st, err := hosts[0].meta.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := st.Credentials["ro"]
	if c == nil || c.CreatedBy != "alice" || !c.Revoked() || c.RevokedBy != hosts[0].name {
		t.Fatalf("credential %+v", c)
	}
	var got []string
	for _, a := range st.Audit {
		got = append(got, a.Action+"/"+a.Credential)
	}
	if !strings.Contains(strings.Join(got, " "), "credential-create/alice credential-revoke/") {
		t.Fatalf("audit %v", got)
	}
}
