package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestBMCPasswordNotAtRest is issue 13's acceptance "a search of every
// log, Raft snapshot and data dir for the BMC password finds nothing", on
// three netns hosts with real tandemd and a real ipmi_sim BMC: the fence
// config is set through a joined node, the metadata shard snapshots (5
// entries per snapshot here), a fence through another joined node powers
// the host off with the password, and then every node's files (data dir,
// Raft WAL and snapshots, logs at debug level) and every log of the run
// are searched for the password, raw, hex and base64. The sealed form is
// found in the snapshots and the WAL: the search looks where the password
// would be.
func TestBMCPasswordNotAtRest(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	base := t.TempDir()
	c := testcluster.New(t, testcluster.Options{Nodes: 3, BaseDir: base})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	var said bytes.Buffer // every CLI output of the test
	cli := func(n *testcluster.Node, args ...string) string {
		t.Helper()
		out, stderr, err := td.CLI(ctx, n, args...)
		said.WriteString(out + stderr)
		if err != nil {
			t.Fatalf("tandem %s on %s: %v\n%s", strings.Join(args, " "), n.Name, err, stderr)
		}
		return out
	}
	for _, n := range c.Nodes {
		cfg := filepath.Join(n.Dir, "tandem.yaml")
		if err := os.WriteFile(cfg, []byte("raft:\n  snapshot_entries: 5\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := td.StartDaemon(ctx, n, "--config", cfg, "--log-level", "debug", "--libvirt-socket", "off"); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "sealed", n1, n2, n3); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n3, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	// Every member holds the same cluster secret, root only: the joiners
	// got it in their join answer.
	var secret []byte
	for _, n := range c.Nodes {
		p := filepath.Join(td.DataDir(n), "cluster.secret")
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
		b, _ := os.ReadFile(p)
		if secret == nil {
			secret = b
		} else if !bytes.Equal(b, secret) {
			t.Fatalf("%s holds another cluster secret than n1", n.Name)
		}
	}

	b, err := c.StartBMC(ctx, n1, testcluster.PowerHooks{})
	if err != nil {
		t.Fatal(err)
	}
	pw := b.Password
	// Set through n2, a joined node: it seals with the secret it was given.
	out := cli(n2, "node", "fence-config", n1.Name, "--ipmi", fmt.Sprintf("%s:%d,%s,%s", b.Host, b.Port, b.User, b.PasswordFile))
	if !strings.Contains(out, "password set (sealed)") {
		t.Fatalf("fence-config answer %q: want the sealed marker", out)
	}
	// Enough entries after the fence config that every replica snapshots
	// a state holding it.
	for i := 0; ; i++ {
		cli(c.Nodes[i%3], "cluster", "config", "set", fmt.Sprintf("resync.rate=%dM", 100+i))
		if i >= 12 && allSnapshotted(t, td, c.Nodes, "tdms1.") {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the metadata shard never snapshotted the sealed fence config on every node")
		}
	}
	// Fence n1 through n3, another joined node: it opens the password in
	// memory and ipmi_sim accepts it (the power-off is confirmed).
	out = cli(n3, "node", "fence", n1.Name)
	if !strings.Contains(out, "fenced (ipmi") || b.PoweredOn() {
		t.Fatalf("node fence: %q, BMC powered on %v", out, b.PoweredOn())
	}
	for _, n := range []*testcluster.Node{n2, n3} {
		cli(n, "node", "list", "--output", "json")
		cli(n, "ha", "status", "--output", "json")
		cli(n, "events", "--tail", "200")
		cli(n, "audit", "--limit", "200")
	}

	// The search: every file of every host (data dir with Raft WAL and
	// snapshots, logs), and every log of the run, the BMC's included.
	forms := secretForms(pw)
	var files, sealedSeen int
	scan := func(path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", path, err)
			return
		}
		files++
		if bytes.Contains(data, []byte("tdms1.")) {
			sealedSeen++
		}
		for _, f := range forms {
			if bytes.Contains(data, []byte(f)) {
				t.Errorf("the BMC password (as %q) is in %s", f, path)
			}
		}
	}
	err = filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		inHost := false
		for _, n := range c.Nodes {
			if strings.HasPrefix(path, n.Dir+string(filepath.Separator)) {
				inHost = true
			}
		}
		// Outside the hosts only logs: the BMC's own configuration and its
		// password file hold the password by definition.
		if inHost || strings.HasSuffix(path, ".log") {
			scan(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range forms {
		if strings.Contains(said.String(), f) {
			t.Errorf("the BMC password (as %q) was printed by the CLI", f)
		}
	}
	if sealedSeen == 0 {
		t.Fatal("no file holds the sealed password: the search did not reach the Raft state")
	}
	t.Logf("searched %d files for %d forms of the BMC password; %d hold its sealed form", files, len(forms), sealedSeen)
}

// allSnapshotted reports whether every node's Raft directory holds a
// snapshot file containing want.
func allSnapshotted(t *testing.T, td *testcluster.Tandem, nodes []*testcluster.Node, want string) bool {
	t.Helper()
	for _, n := range nodes {
		found := false
		_ = filepath.WalkDir(filepath.Join(td.DataDir(n), "raft"), func(path string, d fs.DirEntry, err error) error {
			if err != nil || found || !strings.HasSuffix(path, ".gbsnap") {
				return nil
			}
			if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(want)) {
				found = true
			}
			return nil
		})
		if !found {
			return false
		}
	}
	return true
}

// secretForms are the ways a password could be written down: raw, hex
// (both cases) and base64 (standard and URL alphabets) at each of the
// three alignments it can have inside a longer encoded string.
func secretForms(pw string) []string {
	forms := []string{pw, hex.EncodeToString([]byte(pw)), strings.ToUpper(hex.EncodeToString([]byte(pw)))}
	for pad := range 3 {
		in := append(bytes.Repeat([]byte{0}, pad), pw...)
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			s := enc.EncodeToString(in)
			// Drop the characters that mix in the padding bytes, and the
			// last group, which depends on what follows.
			lead := (pad*8 + 5) / 6
			s = s[lead : len(s)-3]
			forms = append(forms, s)
		}
	}
	return forms
}
