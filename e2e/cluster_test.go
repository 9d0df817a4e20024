package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// binDir holds tandemd and tandem built once for the package's tests.
func binDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tandem-test-bin-%d", os.Getpid()))
	if _, err := os.Stat(filepath.Join(dir, "tandem")); err == nil {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testcluster.BuildBinaries(ctx, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMain(m *testing.M) {
	switch os.Getenv("TANDEM_TEST_HELPER") {
	case "hello":
		os.Exit(helloHelper())
	case "joinflood":
		os.Exit(joinFloodHelper())
	}
	code := m.Run()
	_ = os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("tandem-test-bin-%d", os.Getpid())))
	os.Exit(code)
}

// grpcurlPath finds the grpcurl the Makefile installs (an exact version).
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		p := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), ".tools", "bin", "grpcurl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("grpcurl not found: run 'make deps' (it installs grpcurl into .tools/bin)")
	return ""
}

// squash normalises JSON whitespace: protojson varies it on purpose.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func voters(st *tandemv1.ClusterStatus) string {
	var b strings.Builder
	for _, n := range st.Nodes {
		fmt.Fprintf(&b, "%s(%s,%s,leader=%v) ", n.Name, n.State, n.Health, n.Leader)
	}
	return b.String()
}

func leaders(st *tandemv1.ClusterStatus) int {
	c := 0
	for _, n := range st.Nodes {
		if n.Leader {
			c++
		}
	}
	return c
}

// TestControlPlane is the acceptance walk on 3 netns hosts plus an
// outsider: form the cluster with the CLI, inspect it with grpcurl, refuse
// bad tokens and unauthenticated calls, survive a leader kill, lose and
// regain quorum, and keep all state across restarts of every node.
func TestControlPlane(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	grpcurl := grpcurlPath(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 4})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n1, n2, n3, n4 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}

	// Create + two joins via the CLI.
	if err := td.Form(ctx, "acme", n1, n2, n3); err != nil {
		t.Fatal(err)
	}
	st, err := td.WaitStatus(ctx, n3, 10*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Voters != 3 || !st.Quorate || leaders(st) != 1 || st.Leader == "" || st.ClusterName != "acme" {
		t.Fatalf("after formation: voters=%d quorate=%v leader=%q nodes=%s", st.Voters, st.Quorate, st.Leader, voters(st))
	}
	clusterID := st.ClusterId
	checkVersions(t, ctx, td, bin, n1)
	if _, _, err := td.CLI(ctx, n2, "cluster", "config", "set", "resync.rate=200M", "ha.armed=true"); err != nil {
		t.Fatal(err)
	}

	// grpcurl lists the services through reflection over mTLS and calls one.
	cred := td.Credentials(n1)
	token, err := os.ReadFile(filepath.Join(cred, "token"))
	if err != nil {
		t.Fatal(err)
	}
	tls := []string{"-cacert", filepath.Join(cred, "ca.crt"), "-cert", filepath.Join(cred, "admin.crt"), "-key", filepath.Join(cred, "admin.key")}
	auth := []string{"-H", "authorization: Bearer " + strings.TrimSpace(string(token))}
	grpc := func(n *testcluster.Node, args ...string) (string, error) {
		out, err := c.Exec(ctx, n, append([]string{grpcurl}, args...)...)
		return string(out), err
	}
	out, err := grpc(n2, append(append(append([]string{}, tls...), auth...), td.AdminAddr(n1), "list")...)
	if err != nil {
		t.Fatalf("grpcurl list: %v", err)
	}
	for _, svc := range []string{"tandem.v1.Cluster", "tandem.v1.Node", "tandem.v1.Volume", "tandem.v1.VM", "tandem.v1.HA", "tandem.v1.Credential", "grpc.health.v1.Health"} {
		if !strings.Contains(out, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, out)
		}
	}
	out, err = grpc(n2, append(append(append([]string{}, tls...), auth...), td.AdminAddr(n3), "tandem.v1.Cluster/Status")...)
	if err != nil || !strings.Contains(squash(out), `"quorate": true`) {
		t.Fatalf("grpcurl Status: %v\n%s", err, out)
	}

	// An admin call without a token, or without a client certificate, is refused.
	out, err = grpc(n2, append(append([]string{}, tls...), td.AdminAddr(n1), "tandem.v1.Cluster/CreateToken")...)
	if err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("CreateToken without bearer token: err=%v\n%s", err, out)
	}
	out, err = grpc(n2, append(append([]string{"-cacert", filepath.Join(cred, "ca.crt")}, auth...), td.AdminAddr(n1), "tandem.v1.Cluster/CreateToken")...)
	if err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("CreateToken without client certificate: err=%v\n%s", err, out)
	}
	_, stderr, err := td.CLI(ctx, n1, "--token", "tdma1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cluster", "token")
	if err == nil || !strings.Contains(stderr, "unknown API credential") {
		t.Fatalf("CLI with a wrong admin token: err=%v stderr=%s", err, stderr)
	}

	// Joins with a reused, a forged and a malformed token are refused; nothing changes.
	before, err := td.Status(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	good, err := td.Token(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := pki.ParseJoinToken(good)
	if err != nil {
		t.Fatal(err)
	}
	forged := parsed
	forged.Secret[0] ^= 0xff
	usedTok, err := td.Token(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	// Use usedTok up by joining... a node that is already a member, which is
	// refused after the token check; then use it properly below.
	cases := []struct{ name, token, want string }{
		{"forged secret", forged.String(), "not valid"},
		{"malformed", "tdmj1.garbage", "malformed"},
	}
	for _, tc := range cases {
		_, stderr, err := td.CLI(ctx, n4, "cluster", "join", td.BackendAddr(n1), "--token", tc.token)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("join with %s token: err=%v stderr=%s", tc.name, err, stderr)
		}
	}
	// Reuse: n4 joins with usedTok, then is removed; the token cannot admit it again.
	if _, _, err := td.CLI(ctx, n4, "cluster", "join", td.BackendAddr(n2), "--token", usedTok); err != nil {
		t.Fatalf("join n4: %v", err)
	}
	// Connections n4 opened before its removal, authenticated by its
	// certificates: the removal cuts them.
	var held []*heldConn
	for _, h := range []struct{ what, addr, cert, key string }{
		{"backend port, node certificate", td.BackendAddr(n1), "tls/node.crt", "tls/node.key"},
		{"admin port, admin certificate", td.AdminAddr(n1), "admin/admin.crt", "admin/admin.key"},
	} {
		hc, err := holdGRPC(c, n4, h.what, h.addr, filepath.Join(td.DataDir(n4), h.cert), filepath.Join(td.DataDir(n4), h.key))
		if err != nil {
			t.Fatalf("n4's connection before its removal: %v", err)
		}
		held = append(held, hc)
	}
	out, _, err = td.CLI(ctx, n1, "node", "remove", "n4", "--force")
	if err != nil {
		t.Fatalf("remove n4: %v", err)
	}
	// n4 answers: it is told, with proof, before leaving the Raft group,
	// and does not have to guess from refused handshakes. (A member that
	// refused n4's Raft dials meanwhile may have told it first.)
	if !strings.Contains(out, "node n4 was told of its removal and stopped for good") && !strings.Contains(out, "node n4 knew of its removal already") {
		t.Errorf("remove n4 did not tell n4:\n%s", out)
	}
	st4, err := td.Status(ctx, n4)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(st4.Warnings, " "); !strings.Contains(w, "this node (n4) was removed from cluster acme by n1 (credential local@n1) at ") {
		t.Fatalf("removed node does not know who removed it: %q", st4.Warnings)
	}
	for _, h := range held {
		if err := h.cut(2 * time.Minute); err != nil {
			t.Error(err)
		}
	}
	// Removal revokes: n4's certificates are refused in the handshake.
	checkRemovedNodeRefused(t, c, td, n4, n1, n2)
	if _, stderr, err := td.CLI(ctx, n1, "node", "remove", "n4"); err == nil || !strings.Contains(stderr, "already removed") {
		t.Fatalf("removing n4 twice: err=%v stderr=%s", err, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n1, "node", "remove", "n1"); err == nil || !strings.Contains(stderr, "cannot remove itself") {
		t.Fatalf("removing self: err=%v stderr=%s", err, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n1, "node", "remove", "nosuch"); err == nil || !strings.Contains(stderr, "no node named") {
		t.Fatalf("removing unknown node: err=%v stderr=%s", err, stderr)
	}
	c.Kill(n4)
	if err := os.RemoveAll(td.DataDir(n4)); err != nil {
		t.Fatal(err)
	}
	if _, err := td.StartDaemon(ctx, n4); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = td.CLI(ctx, n4, "cluster", "join", td.BackendAddr(n1), "--token", usedTok)
	if err == nil || !strings.Contains(stderr, "already used") {
		t.Fatalf("join with a reused token: err=%v stderr=%s", err, stderr)
	}
	after, err := td.WaitStatus(ctx, n1, 10*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate })
	if err != nil {
		t.Fatal(err)
	}
	if after.Voters != before.Voters || after.ClusterId != before.ClusterId {
		t.Fatalf("refused joins changed the cluster: before %s, after %s", voters(before), voters(after))
	}
	if st4, err := td.Status(ctx, n4); err != nil || st4.Initialized {
		t.Fatalf("refused node n4 thinks it is in a cluster: %v %v", st4, err)
	}
	_ = good

	// Kill the leader: a new leader is elected and the cluster stays quorate.
	byName := map[string]*testcluster.Node{"n1": n1, "n2": n2, "n3": n3}
	st, err = td.Status(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	oldLeader := byName[st.Leader]
	if oldLeader == nil {
		t.Fatalf("no leader among n1..n3: %s", voters(st))
	}
	var survivors []*testcluster.Node
	for _, n := range []*testcluster.Node{n1, n2, n3} {
		if n != oldLeader {
			survivors = append(survivors, n)
		}
	}
	killedAt := time.Now()
	c.Kill(oldLeader)
	st, err = td.WaitStatus(ctx, survivors[0], 20*time.Second, func(s *tandemv1.ClusterStatus) bool {
		return s.Quorate && s.Leader != "" && s.Leader != oldLeader.Name
	})
	if err != nil {
		t.Fatal(err)
	}
	// The 2 s goal is measured over 20 kills in bench/; here we report it.
	t.Logf("leader %s killed; new leader %s seen after %v", oldLeader.Name, st.Leader, time.Since(killedAt).Round(time.Millisecond))
	if st.VotesOnline != 2 || st.Voters != 3 {
		t.Fatalf("after leader kill: %d of %d votes online, want 2 of 3: %s", st.VotesOnline, st.Voters, voters(st))
	}

	// Kill a second node: the last one says it is not quorate and refuses removal.
	last, second := survivors[0], survivors[1]
	c.Kill(second)
	st, err = td.WaitStatus(ctx, last, 20*time.Second, func(s *tandemv1.ClusterStatus) bool { return !s.Quorate })
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != "" || st.VotesOnline != 1 || !strings.Contains(strings.Join(st.Warnings, " "), "NOT QUORATE") {
		t.Fatalf("without quorum: leader=%q online=%d warnings=%v", st.Leader, st.VotesOnline, st.Warnings)
	}
	table, _, err := td.CLI(ctx, last, "cluster", "status")
	if err != nil || !strings.Contains(table, "NOT QUORATE") {
		t.Fatalf("status table without quorum: %v\n%s", err, table)
	}
	_, stderr, err = td.CLI(ctx, last, "node", "remove", oldLeader.Name)
	if err == nil || !strings.Contains(stderr, "no quorum") {
		t.Fatalf("node remove without quorum: err=%v stderr=%s", err, stderr)
	}
	_, stderr, err = td.CLI(ctx, last, "cluster", "token")
	if err == nil || !strings.Contains(stderr, "no quorum") {
		t.Fatalf("token without quorum: err=%v stderr=%s", err, stderr)
	}

	// Restart both: quorate again, nothing lost.
	for _, n := range []*testcluster.Node{oldLeader, second} {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	st, err = td.WaitStatus(ctx, last, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if st.ClusterId != clusterID || st.Voters != 3 {
		t.Fatalf("after restart: %s", voters(st))
	}

	// Restart every node at once (SIGTERM, graceful): members and config survive.
	appliedBefore := st.AppliedIndex
	for _, n := range []*testcluster.Node{n1, n2, n3} {
		c.Kill(n)
	}
	for _, n := range []*testcluster.Node{n1, n2, n3} {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	st, err = td.WaitStatus(ctx, n2, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 })
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, n := range st.Nodes {
		names[n.Name] = n.State
	}
	if st.ClusterId != clusterID || names["n1"] != "member" || names["n2"] != "member" || names["n3"] != "member" || names["n4"] != "removed" || st.AppliedIndex < appliedBefore {
		t.Fatalf("state after restarting every node: id=%s applied=%d (before %d) nodes=%s", st.ClusterId, st.AppliedIndex, appliedBefore, voters(st))
	}
	cfgOut, _, err := td.CLI(ctx, n3, "cluster", "config", "get", "--output", "json")
	if err != nil || !strings.Contains(squash(cfgOut), `"resync.rate": "200MiB/s"`) || !strings.Contains(squash(cfgOut), `"ha.armed": "true"`) {
		t.Fatalf("cluster config after restarting every node: %v\n%s", err, cfgOut)
	}
	// And the cluster still takes changes.
	if _, err := td.Token(ctx, n3); err != nil {
		t.Fatal(err)
	}
}

// TestWitnessKeepsTwoDataNodesQuorate: two data nodes plus a witness; losing
// a data node leaves the other with the witness's vote.
func TestWitnessKeepsTwoDataNodesQuorate(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n1, n2, w := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	for _, n := range []*testcluster.Node{n1, n2} {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := td.StartDaemon(ctx, w, "--role", "witness"); err != nil {
		t.Fatal(err)
	}
	if err := td.Form(ctx, "pair", n1, n2, w); err != nil {
		t.Fatal(err)
	}
	st, err := td.WaitStatus(ctx, n1, 10*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 })
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		want := tandemv1.NodeRole_NODE_ROLE_DATA
		if n.Name == w.Name {
			want = tandemv1.NodeRole_NODE_ROLE_WITNESS
		}
		if n.Role != want || n.Vote != tandemv1.Vote_VOTE_VOTER {
			t.Fatalf("node %s: role %s vote %s", n.Name, n.Role, n.Vote)
		}
	}
	c.Kill(n1)
	st, err = td.WaitStatus(ctx, n2, 20*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.Leader != "" && s.Leader != "n1" })
	if err != nil {
		t.Fatal(err)
	}
	if st.VotesOnline != 2 || st.Voters != 3 {
		t.Fatalf("data node + witness: %d of %d votes online", st.VotesOnline, st.Voters)
	}
	if _, err := td.Token(ctx, n2); err != nil {
		t.Fatalf("data node + witness should accept changes: %v", err)
	}
}

// TestExpectedVotesOverride: after losing two of three nodes for good, the
// survivor is made quorate alone; the left-out nodes are recorded as removed
// and one of them rejoins with a fresh data dir and a new token.
func TestExpectedVotesOverride(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "lone"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "resync.rate=300M"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n3, 10*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	c.Kill(n1)
	c.Kill(n2)
	if _, err := td.WaitStatus(ctx, n3, 20*time.Second, func(s *tandemv1.ClusterStatus) bool { return !s.Quorate }); err != nil {
		t.Fatal(err)
	}
	// Refused without confirmation (no terminal) and with N != 1.
	if _, stderr, err := td.CLI(ctx, n3, "cluster", "expected-votes", "1"); err == nil {
		t.Fatalf("expected-votes without confirmation succeeded: %s", stderr)
	}
	if _, stderr, err := td.CLI(ctx, n3, "cluster", "expected-votes", "2", "--yes-i-understand-split-brain"); err == nil || !strings.Contains(stderr, "only 1") {
		t.Fatalf("expected-votes 2: err=%v stderr=%s", err, stderr)
	}
	out, stderr, err := td.CLI(ctx, n3, "cluster", "expected-votes", "1", "--yes-i-understand-split-brain")
	if err != nil {
		t.Fatalf("expected-votes 1: %v", err)
	}
	if !strings.Contains(stderr, "WARNING") || !strings.Contains(out, "n1, n2") {
		t.Fatalf("override output lacks the warning or the removed nodes:\nstdout:\n%s\nstderr:\n%s", out, stderr)
	}
	st, err := td.WaitStatus(ctx, n3, 10*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate })
	if err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, a := range st.Audit {
		audited = audited || a.Action == "expected-votes-override"
	}
	if st.Voters != 1 || st.Leader != "n3" || !audited {
		t.Fatalf("after override: voters=%d leader=%q audited=%v nodes=%s", st.Voters, st.Leader, audited, voters(st))
	}
	cfg, _, err := td.CLI(ctx, n3, "cluster", "config", "get", "--output", "json")
	if err != nil || !strings.Contains(squash(cfg), `"resync.rate": "300MiB/s"`) {
		t.Fatalf("config lost by the override: %v %s", err, cfg)
	}
	// n2 comes back wiped and rejoins with a new token.
	if err := os.RemoveAll(td.DataDir(n2)); err != nil {
		t.Fatal(err)
	}
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	tok, err := td.Token(ctx, n3)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := td.CLI(ctx, n2, "cluster", "join", td.BackendAddr(n3), "--token", tok); err != nil {
		t.Fatalf("rejoin after override: %v", err)
	}
	st, err = td.WaitStatus(ctx, n2, 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Voters != 2 {
		t.Fatalf("after rejoin: %s", voters(st))
	}
}

// checkVersions: tandemd --version prints the version BuildBinaries linked
// in (git describe, so not the "dev" default inside a checkout), node list
// gives every online node that version, and tandem version shows the CLI's
// and the daemon's.
func checkVersions(t *testing.T, ctx context.Context, td *testcluster.Tandem, bin string, n *testcluster.Node) {
	t.Helper()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "tandemd"), "--version").Output()
	if err != nil {
		t.Fatalf("tandemd --version: %v", err)
	}
	want, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "tandemd ")
	if !ok || want == "" || strings.ContainsAny(want, " \n") {
		t.Fatalf("tandemd --version: %q", out)
	}
	if err := exec.CommandContext(ctx, "git", "rev-parse", "--git-dir").Run(); err == nil && want == version.Default {
		t.Errorf("tandemd --version = %q in a git checkout: -X did not reach internal/version", want)
	}
	out2, _, err := td.CLI(ctx, n, "node", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes tandemv1.ListNodesResponse
	if err := adminclient.UnmarshalJSON([]byte(out2), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, ni := range nodes.Nodes {
		if ni.Health == tandemv1.Health_HEALTH_ONLINE && ni.Version != want {
			t.Errorf("node list: %s (online) has version %q, want %q", ni.Name, ni.Version, want)
		}
	}
	stdout, _, err := td.CLI(ctx, n, "version")
	if err != nil || !strings.Contains(stdout, "tandem "+want+" ") || !strings.Contains(stdout, "tandemd "+want+" (node "+n.Name+")") {
		t.Errorf("tandem version: %v\n%s", err, stdout)
	}
}
