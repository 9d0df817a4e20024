package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestOperatorVolumeCorrectness covers issue 19 ("operator correctness") on
// one shared 3-node cluster: out of space at create, a discard repeated
// during its resync, delete during a resync and with a node down, and a
// resync rate change reaching a running resync.
func TestOperatorVolumeCorrectness(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	const size = 64 << 20
	cli := func(args ...string) (string, string, error) { return td.CLI(ctx, n3, args...) }
	mustCLI := func(t *testing.T, args ...string) string {
		t.Helper()
		out, stderr, err := cli(args...)
		if err != nil {
			t.Fatalf("tandem %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	setRate := func(t *testing.T, v string) {
		t.Helper()
		mustCLI(t, "cluster", "config", "set", "resync.rate="+v)
	}
	synced := func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	}
	syncTarget := func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET && r.ResyncSentBytes > 0
	}
	// noFiles checks that no node keeps a file of the volume.
	noFiles := func(t *testing.T, vol string) {
		t.Helper()
		for _, n := range c.Nodes {
			if _, err := os.Stat(filepath.Join(td.DataDir(n), "volumes", vol+".vol")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: replica file of %s left: %v", n.Name, vol, err)
			}
		}
	}
	gone := func(t *testing.T, vol string) {
		t.Helper()
		if _, stderr, err := cli("volume", "show", vol); err == nil || !strings.Contains(stderr, "no volume named") {
			t.Fatalf("volume show %s after delete: %v %s", vol, err, stderr)
		}
	}
	filled := func(t *testing.T, vol string) {
		t.Helper()
		volumeCmd(t, ctx, td, n1, "create", vol, "--size", "64M", "--nodes", "n1,n2")
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64M", "-c", "flush", nbdURI(td, n1, vol))
	}

	// fallocate's ENOSPC on a node used to come back as Internal. A tmpfs
	// of exactly the volume's size passes the free-space checks; the
	// replica's metadata then does not fit.
	t.Run("OutOfSpaceIsResourceExhausted", func(t *testing.T) {
		dir := filepath.Join(td.DataDir(n2), "volumes")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// The daemon has a mount namespace of its own ('ip netns exec'):
		// restart it to learn its PID, and mount in there.
		c.Kill(n2)
		p, err := td.StartDaemon(ctx, n2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := td.WaitStatus(ctx, n1, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
			t.Fatal(err)
		}
		pid := strconv.Itoa(p.PID())
		if out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a small tmpfs for n2: %v %s", err, out)
		}
		defer func() {
			if out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "umount", dir).CombinedOutput(); err != nil {
				t.Fatalf("umount: %v %s", err, out)
			}
		}()
		_, stderr, err := cli("volume", "create", "full", "--size", "8M", "--nodes", "n1,n2")
		// Internal shows as "tandemd error: ..."; ResourceExhausted as the message.
		if err == nil || strings.Contains(stderr, "tandemd error") || !strings.Contains(stderr, "node n2 has 8 MiB free") || !strings.Contains(stderr, "the volume needs 8 MiB") {
			t.Fatalf("create on a full disk: %v\n%s", err, stderr)
		}
		t.Logf("create on a full disk: %s", strings.TrimSpace(stderr))
		gone(t, "full")
		noFiles(t, "full")
	})

	// Discarding a replica again while it resyncs used to open a second
	// connection; the replica then flapped UpToDate/Outdated/SyncTarget
	// about once a second.
	t.Run("DiscardDuringResyncSettles", func(t *testing.T) {
		filled(t, "ux-g")
		setRate(t, "16777216") // 16 MiB/s: the full resync takes about 4 s
		mustCLI(t, "volume", "resync", "ux-g", "--discard", "n2")
		time.Sleep(1100 * time.Millisecond)
		mustCLI(t, "volume", "resync", "ux-g", "--discard", "n2")
		setRate(t, "")
		waitVolume(t, ctx, td, n1, "ux-g", 60*time.Second, synced)
		first := volumeCmd(t, ctx, td, n1, "show", "ux-g")
		last := first.History[len(first.History)-1]
		for range 12 { // over several reconnect intervals
			time.Sleep(500 * time.Millisecond)
			v := volumeCmd(t, ctx, td, n1, "show", "ux-g")
			h := v.History[len(v.History)-1]
			if !synced(v) || !h.At.AsTime().Equal(last.At.AsTime()) {
				t.Fatalf("n2 did not stay UpToDate: %v; last event %q %q (settled at %q %q)", replicaState(v, "n2"), h.What, h.Reason, last.What, last.Reason)
			}
		}
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n1, "ux-g"))
		if replicaSum(t, td, n1, "ux-g", size) != replicaSum(t, td, n2, "ux-g", size) {
			t.Fatal("replicas differ after the resync")
		}
	})

	// Delete during a (repeated) resync used to hang past the deadline and
	// leave the replicas open and on disk, with the catalog entry gone.
	t.Run("DeleteDuringResync", func(t *testing.T) {
		if _, _, err := cli("volume", "show", "ux-g"); err != nil {
			filled(t, "ux-g")
		}
		setRate(t, "1048576") // 1 MiB/s: the resync is still running below
		defer setRate(t, "")
		mustCLI(t, "volume", "resync", "ux-g", "--discard", "n2")
		time.Sleep(1100 * time.Millisecond)
		mustCLI(t, "volume", "resync", "ux-g", "--discard", "n2")
		waitVolume(t, ctx, td, n1, "ux-g", 30*time.Second, syncTarget)
		start := time.Now()
		mustCLI(t, "volume", "delete", "ux-g")
		t.Logf("deleted during resync in %s", time.Since(start).Round(time.Millisecond))
		gone(t, "ux-g")
		noFiles(t, "ux-g")
	})

	// A new resync.rate used to reach a running resync only after the
	// pause in progress: at 64 KiB/s, 16 s for each 1 MiB chunk (hours at
	// a mistaken rate of a few bytes/s).
	t.Run("RateChangeReachesRunningResync", func(t *testing.T) {
		filled(t, "slow")
		setRate(t, "65536")
		defer setRate(t, "")
		mustCLI(t, "volume", "resync", "slow", "--discard", "n2")
		waitVolume(t, ctx, td, n1, "slow", 30*time.Second, syncTarget) // the first chunk went; its pause runs
		start := time.Now()
		setRate(t, "")
		// Generous for a 64 MiB resync, yet shorter than the 16 s pause.
		waitVolume(t, ctx, td, n1, "slow", 12*time.Second, synced)
		t.Logf("resync done %s after the rate was lifted", time.Since(start).Round(time.Millisecond))
		mustCLI(t, "volume", "delete", "slow")
	})

	// A node down during a delete: the volume stays listed as deleting;
	// the node removes its replica once back, and delete again finishes.
	t.Run("DeleteWithNodeDown", func(t *testing.T) {
		volumeCmd(t, ctx, td, n1, "create", "dn", "--size", "16M", "--nodes", "n1,n2")
		c.Kill(n2)
		_, stderr, err := cli("volume", "delete", "dn")
		if err == nil || !strings.Contains(stderr, "deleting") {
			t.Fatalf("delete with n2 down: %v\n%s", err, stderr)
		}
		t.Logf("delete with n2 down: %s", strings.TrimSpace(stderr))
		out := mustCLI(t, "volume", "list", "--output", "json")
		var list tandemv1.ListVolumesResponse
		if err := adminclient.UnmarshalJSON([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		var state string
		for _, v := range list.Volumes {
			if v.Name == "dn" {
				state = v.State
			}
		}
		if state != "deleting" {
			t.Fatalf("volume list after a partial delete: dn is %q, want deleting\n%s", state, out)
		}
		if _, err := os.Stat(filepath.Join(td.DataDir(n2), "volumes", "dn.vol")); err != nil {
			t.Fatalf("n2's replica before it is back: %v", err)
		}
		if _, err := td.StartDaemon(ctx, n2); err != nil {
			t.Fatal(err)
		}
		if _, err := td.WaitStatus(ctx, n1, 30*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(td.DataDir(n2), "volumes", "dn.vol")
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n2 kept the replica of the deleted volume:\n%s", c.LogTail(n2, "tandemd", 20))
			}
			time.Sleep(200 * time.Millisecond)
		}
		mustCLI(t, "volume", "delete", "dn")
		gone(t, "dn")
		noFiles(t, "dn")
	})
}
