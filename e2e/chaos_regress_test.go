package e2e

import (
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestPromotionResyncsReplicaOutdatedByOldPrimary is the regression test of
// the fault-schedule runner's first finding (package chaos, CI seed 5 of
// its first run: power-off of a secondary, promote, split). With three
// replicas, n2 is fenced off (Outdated) by the primary n1, which goes on
// acknowledging writes that only n1 and n3 get, recorded in n1's bitmap
// for n2. n3 is promoted. n2 comes back and is resynced by n3 — whose
// bitmap for n2 holds only what n3 wrote since its promotion. n2 must still
// end identical to the primary.
func TestPromotionResyncsReplicaOutdatedByOldPrimary(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3node := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	const size = 32 << 20
	volumeCmd(t, ctx, td, n1, "create", "outd", "--size", "32M", "--replicas", "3", "--nodes", "n1,n2,n3")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "outd")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if acked, _ := writeBlocks(ctx, client, 0, 64, nil); len(acked) != 64 {
		t.Fatalf("warm-up writes: %d acked", len(acked))
	}
	c.Kill(n2)
	// Writes n2 misses, spread over several bitmap regions: n1 fences n2
	// off at the first and records them in its own bitmap for n2.
	for i := uint64(0); i < 64; i++ {
		b := 1024 + i*97
		if err := client.WriteAt(ctx, pattern(b+3), b*4096, nbdclient.FlagFUA); err != nil {
			t.Fatalf("write while n2 is down: %v", err)
		}
	}
	waitVolume(t, ctx, td, n1, "outd", 30*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	client.Close()
	info := volumeCmd(t, ctx, td, n3node, "promote", "outd", "--node", "n3")
	if info.Primary != "n3" || info.Epoch != 2 {
		t.Fatalf("promote: %v", info)
	}
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, td, n3node, "outd", 90*time.Second, func(v *tandemv1.VolumeInfo) bool {
		for _, n := range []string{"n1", "n2"} {
			r := replicaState(v, n)
			if r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE || r.Link != "in-sync" {
				return false
			}
		}
		return true
	})
	if out, stderr, err := td.CLI(ctx, n3node, "volume", "verify", "outd"); err != nil {
		t.Fatalf("verify after n2's resync by the new primary: %v\n%s%s", err, out, stderr)
	}
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n3node, "outd"))
	if replicaSum(t, td, n2, "outd", size) != replicaSum(t, td, n3node, "outd", size) {
		t.Fatal("n2 differs from the new primary after its resync")
	}
}
