package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestCredentials is issue 13's acceptance for named API credentials on 3
// members plus a fourth that joins and is removed: a readonly credential
// lists on every node and is refused a mutation with PermissionDenied
// naming its role; once 'credential revoke' returns, the very next call to
// each node is refused; the audit names the credential; a joined node gets
// no admin token, and after 'node remove n4' n4's admin certificate is
// refused; the last admin credential is kept unless --force, and the unix
// socket stays a way in.
func TestCredentials(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	grpcurl := grpcurlPath(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 4})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	n1, n2, n3, n4 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "acme", n1, n2, n3, n4); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n1, 20*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 4 }); err != nil {
		t.Fatal(err)
	}
	members := []*testcluster.Node{n1, n2, n3}

	// Only the creating node holds a token (the bootstrap credential).
	if _, err := os.Stat(filepath.Join(td.Credentials(n4), "token")); !os.IsNotExist(err) {
		t.Fatalf("joined node n4 was handed an admin token: %v", err)
	}
	boot, err := os.ReadFile(filepath.Join(td.Credentials(n1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	cred := td.Credentials(n1)
	// remote runs the CLI in n2's namespace against node n's TCP admin
	// API with n1's client certificate and the given secret.
	remote := func(n *testcluster.Node, secret string, args ...string) (string, string, error) {
		return td.RawCLI(ctx, n2, append([]string{"--server", td.AdminAddr(n), "--credentials", cred, "--token", secret}, args...)...)
	}
	create := func(via func(args ...string) (string, string, error), name, role string) string {
		t.Helper()
		out, _, err := via("credential", "create", name, "--role", role, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var r tandemv1.CreateCredentialResponse
		if err := adminclient.UnmarshalJSON([]byte(out), &r); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(r.Unconfirmed) != 0 || r.Credential.GetRole() != role || !strings.HasPrefix(r.Secret, "tdma1.") {
			t.Fatalf("create %s: %v", name, &r)
		}
		return r.Secret
	}
	local := func(n *testcluster.Node) func(args ...string) (string, string, error) {
		return func(args ...string) (string, string, error) { return td.CLI(ctx, n, args...) }
	}

	// An admin credential made on the unix socket, then used remotely to
	// make a readonly one and to change a setting: the audit names it.
	alice := create(local(n1), "alice", "admin")
	viewer := create(func(args ...string) (string, string, error) { return remote(n3, alice, args...) }, "viewer", "readonly")
	if _, _, err := remote(n2, alice, "cluster", "config", "set", "resync.rate=150M"); err != nil {
		t.Fatal(err)
	}

	// Readonly: lists on every node, refused a mutation on every node.
	for _, n := range members {
		if out, _, err := remote(n, viewer, "vm", "list"); err != nil {
			t.Fatalf("vm list with the readonly credential on %s: %v\n%s", n.Name, err, out)
		}
		if _, _, err := remote(n, viewer, "volume", "list"); err != nil {
			t.Fatalf("volume list with the readonly credential on %s: %v", n.Name, err)
		}
		_, stderr, err := remote(n, viewer, "vm", "stop", "web")
		if err == nil || !strings.Contains(stderr, "permission denied: credential viewer has role readonly; /tandem.v1.VM/Stop needs role operator") {
			t.Fatalf("vm stop with the readonly credential on %s: err=%v stderr=%s", n.Name, err, stderr)
		}
	}
	tlsArgs := []string{"-cacert", filepath.Join(cred, "ca.crt"), "-cert", filepath.Join(cred, "admin.crt"), "-key", filepath.Join(cred, "admin.key")}
	grpc := func(secret string, n *testcluster.Node, method string) string {
		args := append(append([]string{grpcurl}, tlsArgs...), "-H", "authorization: Bearer "+secret, td.AdminAddr(n), method)
		out, _ := c.Exec(ctx, n2, args...)
		return string(out)
	}
	if out := grpc(viewer, n1, "tandem.v1.Volume/Create"); !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "role readonly") {
		t.Fatalf("grpcurl Volume/Create with the readonly credential:\n%s", out)
	}

	// Revoke, and at once every node refuses it.
	if _, stderr, err := td.CLI(ctx, n1, "credential", "revoke", "viewer"); err != nil || strings.Contains(stderr, "not confirmed") {
		t.Fatalf("revoke: %v %s", err, stderr)
	}
	for _, n := range members {
		if out := grpc(viewer, n, "tandem.v1.VM/List"); !strings.Contains(out, "Unauthenticated") || !strings.Contains(out, "credential viewer was revoked") {
			t.Fatalf("revoked credential on %s:\n%s", n.Name, out)
		}
	}

	// The audit names the credential of each change.
	out, _, err := td.CLI(ctx, n2, "audit", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var audit tandemv1.AuditResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &audit); err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range audit.Entries {
		trail = append(trail, e.Action+"/"+e.Credential)
	}
	joined := strings.Join(trail, " ")
	for _, want := range []string{"credential-create/local@n1", "credential-create/alice", "config-set/alice", "credential-revoke/local@n1"} {
		if !strings.Contains(joined, want) {
			t.Errorf("audit lacks %s: %s", want, joined)
		}
	}
	table, _, err := td.CLI(ctx, n3, "audit", "--action", "credential")
	if err != nil || !strings.Contains(table, "CREDENTIAL") || !strings.Contains(table, "alice") {
		t.Fatalf("audit table: %v\n%s", err, table)
	}

	// n4 is down when it is removed, so it cannot be told then; restarted,
	// it knocks (Raft, peer calls), the members refuse its certificate and
	// tell it, and only that proof makes it say it was removed.
	c.Kill(n4)
	out, _, err = td.CLI(ctx, n1, "node", "remove", "n4", "--force")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "node n4 could not be told of its removal") {
		t.Errorf("removing n4 while it is down:\n%s", out)
	}
	if _, err := td.StartDaemon(ctx, n4); err != nil {
		t.Fatal(err)
	}
	// Generous: the first member n4 reaches tells it at once.
	if _, err := td.WaitStatus(ctx, n4, 2*time.Minute, func(s *tandemv1.ClusterStatus) bool {
		return strings.Contains(strings.Join(s.Warnings, " "), "this node (n4) was removed from cluster")
	}); err != nil {
		t.Fatalf("n4, restarted after its removal, was not told: %v", err)
	}

	// After removing n4, its admin certificate is refused even with a
	// valid credential; n1's still works.
	cred4 := td.Credentials(n4)
	for _, n := range members {
		args := []string{grpcurl, "-cacert", filepath.Join(cred4, "ca.crt"), "-cert", filepath.Join(cred4, "admin.crt"), "-key", filepath.Join(cred4, "admin.key"),
			"-H", "authorization: Bearer " + alice, td.AdminAddr(n), "tandem.v1.VM/List"}
		out, _ := c.Exec(ctx, n2, args...)
		// The revocation list refuses it in the TLS handshake (grpcurl
		// then gives up dialling); a call that got through would be refused
		// by the admin check.
		refused := strings.Contains(string(out), "Failed to dial target host") ||
			(strings.Contains(string(out), "PermissionDenied") && strings.Contains(string(out), "admin@n4 belongs to node n4, which was removed"))
		if !refused {
			t.Fatalf("n4's admin certificate on %s after removal:\n%s", n.Name, out)
		}
		if _, _, err := remote(n, alice, "vm", "list"); err != nil {
			t.Fatalf("n1's certificate with alice on %s: %v", n.Name, err)
		}
	}

	// The bootstrap credential is revoked like any other; the last admin
	// credential only with --force; the unix socket stays a way in.
	if _, _, err := remote(n2, strings.TrimSpace(string(boot)), "credential", "revoke", "bootstrap"); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := remote(n3, alice, "credential", "revoke", "alice"); err == nil || !strings.Contains(stderr, "refusing to revoke the last admin credential") || !strings.Contains(stderr, "--force") {
		t.Fatalf("revoking the last admin credential: err=%v stderr=%s", err, stderr)
	}
	if _, _, err := remote(n3, alice, "credential", "revoke", "alice", "--force"); err != nil {
		t.Fatal(err)
	}
	list, _, err := td.CLI(ctx, n2, "credential", "list", "--all")
	if err != nil || !strings.Contains(list, "bootstrap") || !strings.Contains(list, "n1") {
		t.Fatalf("credential list on the unix socket after revoking every admin: %v\n%s", err, list)
	}
	if out := grpc(alice, n2, "tandem.v1.VM/List"); !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("alice after revocation:\n%s", out)
	}
}
