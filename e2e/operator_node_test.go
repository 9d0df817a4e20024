package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// nodeStates is "name=state" for every node, sorted.
func nodeStates(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node) string {
	t.Helper()
	st, err := td.Status(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range st.Nodes {
		out = append(out, fmt.Sprintf("%s=%s", x.Name, x.State))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestOperatorNodeRemoveSafety: node remove refuses a node that is online,
// and a node that is down but the primary and only UpToDate replica of a
// volume, changing nothing; --force removes it and says what it overrode.
func TestOperatorNodeRemoveSafety(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	// A slow resync keeps n2 behind once it is back (64 KiB/s, the least
	// a rate may be).
	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "resync.rate=64K"); err != nil {
		t.Fatal(err)
	}
	volumeCmd(t, ctx, td, n1, "create", "keep", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")

	// n2 is online: refused, nothing changed.
	before := nodeStates(t, ctx, td, n3)
	_, stderr, err := td.CLI(ctx, n3, "node", "remove", "n2")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(stderr, "node n2 is online") || !strings.Contains(stderr, "volume keep") {
		t.Fatalf("removing an online node: err=%v\n%s", err, stderr)
	}
	if after := nodeStates(t, ctx, td, n3); after != before {
		t.Fatalf("a refused removal changed the nodes: %s -> %s", before, after)
	}

	// n2 goes down and misses 16 MiB of writes: it is Outdated.
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "keep")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c.Kill(n2)
	done := make(chan int)
	go func() {
		acked, _ := writeBlocks(ctx, client, 0, 4096, nil)
		done <- len(acked)
	}()
	waitVolume(t, ctx, td, n1, "keep", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	if acked := <-done; acked != 4096 {
		t.Fatalf("%d of 4096 writes acknowledged with n2 down", acked)
	}
	// n2 comes back and resyncs slowly; then n1, the primary and only
	// UpToDate replica, goes down.
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, td, n1, "keep", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").Link == "syncing"
	})
	client.Close()
	c.Kill(n1)
	if _, err := td.WaitStatus(ctx, n3, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 2 }); err != nil {
		t.Fatal(err)
	}
	before = nodeStates(t, ctx, td, n3)
	_, stderr, err = td.CLI(ctx, n3, "node", "remove", "n1")
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("removing the only UpToDate replica was not refused: %v\n%s", err, stderr)
	}
	for _, want := range []string{"refusing to remove node n1", "node n1 is the primary of volume keep", "node n1 holds the only UpToDate replica of volume keep (64 MiB)", "--force"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "is online") {
		t.Errorf("n1 is down but reported online:\n%s", stderr)
	}
	if after := nodeStates(t, ctx, td, n3); after != before {
		t.Fatalf("a refused removal changed the nodes: %s -> %s", before, after)
	}

	// --force removes it and reports what it overrode.
	stdout, stderr, err := td.CLI(ctx, n3, "node", "remove", "n1", "--force")
	if err != nil || !strings.Contains(stdout, `removed node "n1"`) {
		t.Fatalf("forced removal: %v\n%s%s", err, stdout, stderr)
	}
	for _, want := range []string{"warning: --force overrode: node n1 is the primary of volume keep", "warning: --force overrode: node n1 holds the only UpToDate replica of volume keep"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("forced removal does not warn %q:\n%s", want, stderr)
		}
	}
	if got := nodeStates(t, ctx, td, n3); !strings.Contains(got, "n1=removed") {
		t.Fatalf("after the forced removal: %s", got)
	}
}
