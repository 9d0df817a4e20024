package e2e

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// cliRun runs the CLI on n and returns its exit code with its output.
func cliRun(ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, args ...string) (code int, stdout, stderr string) {
	stdout, stderr, err := td.CLI(ctx, n, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout, stderr
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout, stderr
	}
	return -1, stdout, stderr + err.Error()
}

// clusterSnapshot is what a refused command must leave as it was.
type clusterSnapshot struct {
	applied uint64
	volumes string // name, size, primary, epoch and replica states of each volume
	vms     string
	nodes   string
}

func snapshot(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node) clusterSnapshot {
	t.Helper()
	st, err := td.Status(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := td.CLI(ctx, n, "volume", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var vols tandemv1.ListVolumesResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &vols); err != nil {
		t.Fatal(err)
	}
	var s clusterSnapshot
	s.applied = st.AppliedIndex
	for _, v := range vols.Volumes {
		s.volumes += v.Name + " " + v.Primary + " " + v.State + " " + strings.Repeat("r", len(v.Replicas)) + ";"
	}
	for _, nd := range st.Nodes {
		s.nodes += nd.Name + " " + nd.State + ";"
	}
	s.vms, _, err = td.CLI(ctx, n, "vm", "list", "--columns", "name,node,desired", "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOperatorReportsAndBadInput: on one running cluster, a resyncing
// replica shows as syncing in volume list, fails 'cluster status --check'
// and is named as skipped by verify (which then exits 1); once in sync all
// three say healthy. Then 39 bad inputs each get the right exit code and a
// message naming the problem, and leave the cluster as it was.
func TestOperatorReportsAndBadInput(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "ok-vol", "--size", "16M", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "ok-vol")
	if err != nil {
		t.Fatal(err)
	}
	if acked, _ := writeBlocks(ctx, client, 0, 4096, nil); len(acked) != 4096 {
		t.Fatalf("%d of 4096 writes acknowledged", len(acked))
	}
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	client.Close()
	inSync := func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync" && v.State == "ready"
	}
	waitVolume(t, ctx, td, n1, "ok-vol", 60*time.Second, inSync)

	t.Run("healthy", func(t *testing.T) {
		if code, out, errOut := cliRun(ctx, td, n1, "cluster", "status", "--check"); code != 0 {
			t.Fatalf("status --check on a healthy cluster: exit %d\n%s%s", code, out, errOut)
		}
		if code, out, errOut := cliRun(ctx, td, n1, "volume", "verify", "ok-vol"); code != 0 || !strings.Contains(out, "every replica matches") {
			t.Fatalf("verify of an in-sync volume: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		badInputs(t, ctx, td, n1)
	})

	t.Run("resyncing", func(t *testing.T) {
		// 1 MiB/s: the 16 MiB full resync takes about 16 s, long enough to look at.
		if _, errOut, err := td.CLI(ctx, n1, "cluster", "config", "set", "resync.rate=1048576"); err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		volumeCmd(t, ctx, td, n1, "resync", "ok-vol", "--discard", "n2")
		waitVolume(t, ctx, td, n1, "ok-vol", 30*time.Second, func(v *tandemv1.VolumeInfo) bool { return v.State == "syncing" })

		code, out, _ := cliRun(ctx, td, n1, "volume", "list")
		if code != 0 || !regexp.MustCompile(`(?m)^ok-vol\s.*\ssyncing\s`).MatchString(out) {
			t.Errorf("volume list during a resync: exit %d\n%s", code, out)
		}
		code, out, errOut := cliRun(ctx, td, n1, "cluster", "status", "--check")
		if code != 1 || !strings.Contains(out, "volume ok-vol is syncing: n2 SyncTarget") || !strings.Contains(errOut, "check failed") {
			t.Errorf("status --check during a resync: exit %d, want 1\n%s%s", code, out, errOut)
		}
		code, out, errOut = cliRun(ctx, td, n1, "volume", "verify", "ok-vol")
		if code != 1 || strings.Contains(out, "every replica matches") || !regexp.MustCompile(`n2\s+SyncTarget\s+no\s+-\s+resync running`).MatchString(out) ||
			!strings.Contains(errOut, "replica(s) on n2 not compared") {
			t.Errorf("verify with a SyncTarget replica: exit %d, want 1 and n2 named as skipped\n%s%s", code, out, errOut)
		}
		if code, out, errOut := cliRun(ctx, td, n1, "volume", "verify", "ok-vol", "--in-sync-only"); code != 0 {
			t.Errorf("verify --in-sync-only: exit %d\n%s%s", code, out, errOut)
		}
		if _, errOut, err := td.CLI(ctx, n1, "cluster", "config", "set", "resync.rate="); err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		waitVolume(t, ctx, td, n1, "ok-vol", 120*time.Second, inSync)
		if code, out, errOut := cliRun(ctx, td, n1, "cluster", "status", "--check"); code != 0 {
			t.Errorf("status --check once in sync again: exit %d\n%s%s", code, out, errOut)
		}
		if code, out, errOut := cliRun(ctx, td, n1, "volume", "verify", "ok-vol"); code != 0 {
			t.Errorf("verify once in sync again: exit %d\n%s%s", code, out, errOut)
		}
		if replicaSum(t, td, n1, "ok-vol", 16<<20) != replicaSum(t, td, n2, "ok-vol", 16<<20) {
			t.Error("replicas differ after the resync")
		}
	})
}

// badInputs drives wrong commands through the CLI against n.
func badInputs(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node) {
	before := snapshot(t, ctx, td, n)
	for _, tc := range []struct {
		args []string
		code int
		msg  string // regexp the stderr must match
	}{
		// Caught by the CLI.
		{[]string{"volume", "create", "x"}, 2, `--size is required`},
		{[]string{"volume", "create", "x", "--size", "abc"}, 2, `size "abc" is not a number`},
		{[]string{"volume", "create", "x", "--size", "0"}, 2, `size "0" is zero`},
		{[]string{"volume", "create", "x", "--size", "-5G"}, 2, `size "-5G" is negative`},
		{[]string{"volume", "create", "x", "--size", "1GB"}, 2, `unit "GB" is ambiguous`},
		{[]string{"volume", "create", "x", "--size", "16M", "--replicas", "4"}, 2, `--replicas must be 1, 2 or 3, not 4`},
		{[]string{"volume", "create", "x", "--size", "16M", "--replicas", "-1"}, 2, `--replicas must be 1, 2 or 3, not -1`},
		{[]string{"volume", "create", "x", "--size", "16M", "--nodes", "n1,n1"}, 2, `n1 is listed twice`},
		{[]string{"-o", "yaml", "volume", "list"}, 2, `--output must be table or json, not "yaml"`},
		{[]string{"--timeout", "0s", "volume", "list"}, 2, `--timeout must be positive`},
		{[]string{"volume", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"cluster", "token", "--ttl", "1000h"}, 2, `--ttl must be at most 168h`},
		{[]string{"audit", "--since", "yesterday"}, 2, `--since: "yesterday" is neither a duration`},
		{[]string{"volume", "list", "--columns", "colour"}, 2, `no column "colour"`},
		{[]string{"vm", "create", "v1", "--memory", "lots", "--kernel", "/boot/vmlinuz"}, 2, `--memory: size "lots"`},
		{[]string{"vm", "create", "v1", "--disk", "1G,replicas=9"}, 2, `replicas must be 1, 2 or 3`},
		// Caught by the daemon's validation (InvalidArgument is exit 2 too).
		{[]string{"volume", "create", "Bad_Name!", "--size", "16M"}, 2, `volume name "Bad_Name!"`},
		{[]string{"volume", "create", "x", "--size", "16M", "--nodes", "nosuch"}, 2, `no node named "nosuch"`},
		{[]string{"volume", "create", "x", "--size", "65T"}, 2, `size 65 TiB is over the 64 TiB limit`},
		{[]string{"volume", "promote", "ok-vol", "--node", "n3"}, 2, `node "n3" holds no replica of ok-vol`},
		{[]string{"volume", "resync", "ok-vol", "--discard", "n3"}, 2, `node "n3" holds no replica of ok-vol`},
		{[]string{"vm", "create", "v1", "--memory", "64M", "--kernel", "/boot/x", "--nic", ",mac=01:00:5e:00:00:01"}, 2, `MAC address 01:00:5e:00:00:01 is a multicast address`},
		{[]string{"vm", "create", "v1", "--memory", "64M", "--kernel", "/boot/x", "--nic", ",mac=zz"}, 2, `MAC address "zz": want six hex pairs`},
		{[]string{"cluster", "config", "set", "resync.rate=abc"}, 2, `resync\.rate`},
		{[]string{"cluster", "config", "set", "resync.rate=-5"}, 2, `resync\.rate`},
		{[]string{"cluster", "config", "set", "nosuch.key=1"}, 2, `nosuch\.key`},
		{[]string{"cluster", "config", "set", "ha.dead_timeout=1ms"}, 2, `ha\.dead_timeout`},
		// Refused by the daemon for what the cluster is (exit 1).
		{[]string{"volume", "show", "nosuch"}, 1, `no volume named "nosuch"`},
		{[]string{"volume", "delete", "nosuch"}, 1, `no volume named "nosuch"`},
		{[]string{"volume", "verify", "nosuch"}, 1, `no volume named "nosuch"`},
		{[]string{"volume", "create", "ok-vol", "--size", "16M"}, 1, `volume "ok-vol" already exists`},
		{[]string{"volume", "create", "x", "--size", "10T"}, 1, `10 TiB free for the volume; 2 replicas needed|has .* free; the volume needs 10 TiB`},
		{[]string{"volume", "resync", "ok-vol", "--discard", "n1"}, 1, `n1 is the primary of ok-vol`},
		{[]string{"vm", "show", "nosuch"}, 1, `nosuch`},
		{[]string{"vm", "create", "v1", "--memory", "64M", "--disk-volume", "nosuch"}, 1, `disk 0: no volume named "nosuch"`},
		{[]string{"vm", "create", "v1", "--memory", "64M", "--disk-volume", "ok-vol", "--node", "nosuch"}, 2, `node "nosuch" is not a member`},
		{[]string{"node", "remove", "nosuch"}, 1, `no node named "nosuch"`},
		{[]string{"node", "remove", "n2"}, 1, `node n2 is online .*ok-vol`},
		{[]string{"node", "show", "nosuch"}, 1, `no node named "nosuch"`},
	} {
		code, out, errOut := cliRun(ctx, td, n, tc.args...)
		if code != tc.code {
			t.Errorf("tandem %s: exit %d, want %d\n%s%s", strings.Join(tc.args, " "), code, tc.code, out, errOut)
			continue
		}
		if !regexp.MustCompile(tc.msg).MatchString(errOut) {
			t.Errorf("tandem %s: stderr does not match %q:\n%s", strings.Join(tc.args, " "), tc.msg, errOut)
		}
		if strings.Contains(errOut, "strconv") || strings.Contains(errOut, "code = ") {
			t.Errorf("tandem %s: raw error text: %s", strings.Join(tc.args, " "), errOut)
		}
	}
	after := snapshot(t, ctx, td, n)
	if after != before {
		t.Errorf("bad input changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
	if after.applied == 0 {
		t.Error("no applied index in the status")
	}
}
