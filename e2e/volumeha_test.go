package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// clusterEvents is the cluster's event log as 'tandem events' prints it.
func clusterEvents(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node) []*tandemv1.Event {
	t.Helper()
	out, _, err := td.CLI(ctx, n, "events", "--tail", "1000", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var evs []*tandemv1.Event
	for _, line := range splitJSONObjects(out) {
		var e tandemv1.Event
		if err := adminclient.UnmarshalJSON([]byte(line), &e); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		evs = append(evs, &e)
	}
	return evs
}

// nbdVolCluster is a quorate 3-node cluster named name whose nodes serve
// the TCP NBD export (TLS) on their IP, port 10809.
func nbdVolCluster(t *testing.T, name string) (*testcluster.Cluster, *testcluster.Tandem, context.Context) {
	t.Helper()
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n, "--nbd-addr", nbdAddr(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	return c, td, ctx
}

// TestVolumeHAWithoutVM: a volume no VM uses, written by an NBD consumer
// over the TLS export, is promoted by HA on its UpToDate replica after its
// primary's node is lost and fenced (HA auto, the default); the consumer
// reconnects to the primary that 'volume show' names and finds every
// acknowledged write. A volume set to HA manual stays where it was, with
// an event telling the operator what to do, and the operator's promote
// then works.
func TestVolumeHAWithoutVM(t *testing.T) {
	c, td, ctx := nbdVolCluster(t, "volha")
	if _, err := c.SwitchOnBackend(); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	nodes := n1.Name + "," + n2.Name
	if v := volumeCmd(t, ctx, td, n1, "create", "auto-v", "--size", "16M", "--nodes", nodes); v.Ha != "auto" || v.Primary != n1.Name {
		t.Fatalf("auto-v: ha %q, primary %q", v.Ha, v.Primary)
	}
	volumeCmd(t, ctx, td, n1, "create", "manual-v", "--size", "16M", "--nodes", nodes)
	if v := volumeCmd(t, ctx, td, n1, "set", "manual-v", "--ha", "manual"); v.Ha != "manual" {
		t.Fatalf("volume set --ha manual: %q", v.Ha)
	}
	dir := issueExportCert(t, ctx, td, n1, "consumer", "auto-v", "manual-v")

	// Acknowledged writes: each qemu-io run ends with a flush that
	// succeeded, through the primary n1.
	for i, vol := range []string{"auto-v", "manual-v"} {
		for k := range 4 {
			cmd := append([]string{"qemu-io"}, append(qemuTLS(n1, vol, dir), "-c", fmt.Sprintf("write -P %d %dk 256k", 0x10+16*i+k, k*512), "-c", "flush")...)
			if out, err := c.ExecSwitch(ctx, cmd...); err != nil {
				t.Fatalf("write %s #%d: %v\n%s", vol, k, err, out)
			}
		}
	}

	// n1 is lost: every process killed and its links down.
	c.Kill(n1)
	c.Isolate(n1)
	lost := time.Now()
	var moved *tandemv1.VolumeInfo
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, _, err := td.CLI(ctx, n2, "volume", "show", "auto-v", "--output", "json")
		if err == nil {
			var v tandemv1.VolumeInfo
			if adminclient.UnmarshalJSON([]byte(out), &v) == nil && v.Primary == n2.Name && v.NbdTcp != "" {
				moved = &v
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("auto-v was not promoted 3 minutes after n1 was lost; events:\n%s", eventLines(clusterEvents(t, ctx, td, n2)))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("auto-v promoted on %s %s after n1 was lost (epoch %d); the consumer reconnects to %s", moved.Primary, time.Since(lost).Round(time.Millisecond), moved.Epoch, moved.NbdTcp)
	if want := "nbds://" + nbdAddr(n2) + "/auto-v"; moved.NbdTcp != want {
		t.Errorf("volume show names the export %q, want %q", moved.NbdTcp, want)
	}
	// The consumer reconnects where volume show says, and finds every
	// acknowledged write; it can write again.
	var reads []string
	for k := range 4 {
		reads = append(reads, "-c", fmt.Sprintf("read -P %d %dk 256k", 0x10+k, k*512))
	}
	cmd := append([]string{"qemu-io"}, append(qemuTLS(n2, "auto-v", dir), append(reads, "-c", "write -P 0x77 4M 64k", "-c", "flush")...)...)
	if out, err := c.ExecSwitch(ctx, cmd...); err != nil || strings.Contains(string(out), "verification failed") {
		t.Fatalf("reading the acknowledged writes back from the new primary: %v\n%s", err, out)
	}

	// The events: fenced, then promoted; manual-v left to the operator.
	evs := clusterEvents(t, ctx, td, n2)
	fenced := firstEvent(evs, func(e *tandemv1.Event) bool {
		return e.Kind == "fence-result" && e.Node == n1.Name && strings.Contains(e.Detail, "confirmed")
	})
	promoted := firstEvent(evs, func(e *tandemv1.Event) bool {
		return e.Kind == "promotion" && strings.Contains(e.Detail, "volume auto-v promoted on "+n2.Name)
	})
	manual := firstEvent(evs, func(e *tandemv1.Event) bool {
		return e.Kind == "volume-ha-manual" && strings.Contains(e.Detail, "manual-v")
	})
	if fenced < 0 || promoted < 0 || promoted < fenced || manual < 0 {
		t.Errorf("events: fenced %d, promoted %d, manual-v %d:\n%s", fenced, promoted, manual, eventLines(evs))
	}
	if firstEvent(evs, func(e *tandemv1.Event) bool { return strings.Contains(e.Detail, "volume manual-v promoted") }) >= 0 {
		t.Errorf("manual-v was promoted by HA:\n%s", eventLines(evs))
	}
	if v := volumeCmd(t, ctx, td, n2, "show", "manual-v"); v.Primary == n2.Name {
		t.Errorf("manual-v moved to %s with HA manual", v.Primary)
	}
	// The operator's promote, then the data is there too.
	volumeCmd(t, ctx, td, n2, "promote", "manual-v", "--node", n2.Name)
	reads = reads[:0]
	for k := range 4 {
		reads = append(reads, "-c", fmt.Sprintf("read -P %d %dk 256k", 0x20+k, k*512))
	}
	cmd = append([]string{"qemu-io"}, append(qemuTLS(n2, "manual-v", dir), reads...)...)
	if out, err := c.ExecSwitch(ctx, cmd...); err != nil || strings.Contains(string(out), "verification failed") {
		t.Fatalf("manual-v after the operator's promote: %v\n%s", err, out)
	}
}

func eventLines(evs []*tandemv1.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s %s %s: %s\n", e.GetAt().AsTime().Format(time.RFC3339Nano), e.GetKind(), e.GetNode(), e.GetDetail())
	}
	return b.String()
}
