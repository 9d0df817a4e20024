package e2e

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestDisklessPrimaryServesAgainWhenPeerReturns is the regression test of
// the fault-schedule runner's finding in its disk-fault profile (package
// chaos, seed 200): n1's disk fails, so n1 detaches it and serves diskless
// through n2, its only in-sync peer. n2's tandemd dies: n1 stops rather
// than acknowledge anything no UpToDate replica has. n2 comes back, still
// UpToDate in the record — and the volume used to stay unavailable until
// n1's tandemd was restarted. Now n1 serves through n2 again, every
// acknowledged write reads back, and once the disk works the operator's
// resync re-attaches it with the replicas identical.
func TestDisklessPrimaryServesAgainWhenPeerReturns(t *testing.T) {
	c, td, ctx, disk := faultVolumeCluster(t, 0)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	// HA manual: n2's death must not be answered by a promotion, which
	// would hide what n1 does on its own.
	volumeCmd(t, ctx, td, n1, "create", "dl", "--size", "16M", "--replicas", "2", "--nodes", "n1,n2", "--ha", "manual")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "dl")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { client.Close() }()
	acked, _ := writeBlocks(ctx, client, 0, 64, nil)
	if len(acked) != 64 {
		t.Fatalf("warm-up writes: %d of 64 acknowledged", len(acked))
	}

	// n1's disk fails every write: it detaches and serves through n2.
	if err := disk.SetFault(faultfs.Fault{Ops: faultfs.OpWrite | faultfs.OpSync, Path: "dl*", Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	more, failed := writeBlocks(ctx, client, 64, 64, nil)
	t.Logf("with n1's disk failing: %d writes acknowledged (through n2), %d failed", len(more), failed)
	acked = append(acked, more...)
	waitVolume(t, ctx, td, n1, "dl", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n1").State == tandemv1.ReplicaState_REPLICA_STATE_FAILED
	})

	// n2 dies: n1 has no replica left to serve from, and stops.
	c.Kill(n2)
	if err := client.WriteAt(ctx, pattern(500), 500*4096, nbdclient.FlagFUA); err == nil {
		t.Fatal("a write was acknowledged with n1 diskless and n2 dead")
	}
	client.Close()

	// n2 is back. n1 must serve through it again, within the bound, with
	// no restart of n1's tandemd.
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	deadline := back.Add(3 * time.Minute)
	for {
		cl, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "dl")
		if err == nil {
			err = cl.WriteAt(ctx, pattern(600), 600*4096, nbdclient.FlagFUA)
			if err == nil {
				client = cl
				break
			}
			cl.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 does not serve volume dl through n2 %s after n2 came back (last: %v)", time.Since(back).Round(time.Second), err)
		}
		time.Sleep(time.Second)
	}
	t.Logf("n1 serves through n2 again %s after n2's tandemd started", time.Since(back).Round(time.Millisecond))
	acked = append(acked, 600)
	buf := make([]byte, 4096)
	for _, b := range acked {
		if err := client.ReadAt(ctx, buf, b*4096); err != nil {
			t.Fatalf("read block %d: %v", b, err)
		}
		if !bytes.Equal(buf, pattern(b)) {
			t.Fatalf("block %d does not hold its acknowledged write", b)
		}
	}
	client.Close()

	// The disk works again: the resync re-attaches it, and the replicas
	// are identical.
	disk.Clear()
	if out, stderr, err := td.CLI(ctx, n1, "volume", "resync", "dl", "--wait", "--timeout-wait", "5m"); err != nil {
		t.Fatalf("volume resync: %v\n%s%s", err, out, stderr)
	}
	waitVolume(t, ctx, td, n1, "dl", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		for _, n := range []string{"n1", "n2"} {
			if replicaState(v, n).State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
				return false
			}
		}
		return true
	})
	out, stderr, err := td.CLI(ctx, n1, "volume", "verify", "dl", "--output", "json")
	if err != nil {
		t.Fatalf("volume verify: %v\n%s%s", err, out, stderr)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after the re-attach: %v: %s", err, out)
	}
}

// faultVolumeCluster is a formed 3-node cluster whose node i keeps its
// volume files on a fault disk (internal/faultfs), returned with it.
func faultVolumeCluster(t *testing.T, i int) (*testcluster.Cluster, *testcluster.Tandem, context.Context, *faultfs.FS) {
	t.Helper()
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	disk, err := td.FaultDisk(c.Nodes[i], "volumes")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "faultvol"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	return c, td, ctx, disk
}

// TestSecondaryDiskEIOResyncsInFull is the regression test of the
// fault-schedule runner's second disk-fault finding (package chaos, seed
// 203): a secondary's disk fails a write with RWF_DSYNC, so its store no
// longer trusts anything since its last good sync and fails every later
// flush. The primary fences it off (Outdated). Once the disk works again
// the resync must bring it back — it used to be refused at its first flush
// forever (the primary freezing acknowledgements at every attempt), until
// tandemd restarted. Now the replica asks for a full resync, and ends
// identical to the primary.
func TestSecondaryDiskEIOResyncsInFull(t *testing.T) {
	c, td, ctx, disk := faultVolumeCluster(t, 1)
	n1 := c.Nodes[0]
	volumeCmd(t, ctx, td, n1, "create", "sec", "--size", "16M", "--replicas", "2", "--nodes", "n1,n2", "--ha", "manual")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "sec")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if acked, _ := writeBlocks(ctx, client, 0, 64, nil); len(acked) != 64 {
		t.Fatalf("warm-up writes: %d of 64 acknowledged", len(acked))
	}
	// n2's disk fails every write and sync: the primary fences n2 off and
	// goes on without it.
	if err := disk.SetFault(faultfs.Fault{Ops: faultfs.OpWrite | faultfs.OpSync, Path: "sec*", Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	if acked, _ := writeBlocks(ctx, client, 64, 256, nil); len(acked) != 256 {
		t.Fatalf("writes with n2's disk failing: %d of 256 acknowledged (n1 must go on without n2)", len(acked))
	}
	waitVolume(t, ctx, td, n1, "sec", time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	if got := disk.Counters(); len(got.Injected) == 0 {
		t.Fatalf("no fault reached n2's disk: %+v", got)
	}
	// The disk works again; writes go on while n2 comes back.
	disk.Clear()
	cleared := time.Now()
	if acked, _ := writeBlocks(ctx, client, 320, 64, nil); len(acked) != 64 {
		t.Fatalf("writes after the fault: %d of 64 acknowledged", len(acked))
	}
	waitVolume(t, ctx, td, n1, "sec", 3*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	})
	t.Logf("n2 UpToDate and in sync %s after its disk works again", time.Since(cleared).Round(time.Millisecond))
	out, stderr, err := td.CLI(ctx, n1, "volume", "verify", "sec", "--output", "json")
	if err != nil {
		t.Fatalf("volume verify: %v\n%s%s", err, out, stderr)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after the resync: %v: %s", err, out)
	}
}

// TestReplicaReopensAfterReadErrorsAtRestart is the regression test of the
// fault-schedule runner's finding of seed 2022: a secondary's tandemd
// restarted while its disk failed reads, so reopening the replica failed
// (its superblock could not be read), and nothing tried again: the
// replica stayed closed, its shard member down, the primary's resyncs
// refused, and the replica Outdated for as long as tandemd ran. Now the
// reopen is retried in the background, and once the disk reads again the
// replica is resynced to UpToDate and identical.
func TestReplicaReopensAfterReadErrorsAtRestart(t *testing.T) {
	c, td, ctx, disk := faultVolumeCluster(t, 1)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "ro", "--size", "16M", "--replicas", "2", "--nodes", "n1,n2", "--ha", "manual")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "ro")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if acked, _ := writeBlocks(ctx, client, 0, 64, nil); len(acked) != 64 {
		t.Fatalf("warm-up writes: %d of 64 acknowledged", len(acked))
	}
	// n2 dies; n1 goes on alone and fences it off.
	c.Kill(n2)
	if acked, _ := writeBlocks(ctx, client, 64, 64, nil); len(acked) != 64 {
		t.Fatalf("writes with n2 down: %d of 64 acknowledged", len(acked))
	}
	waitVolume(t, ctx, td, n1, "ro", time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	// n2 starts while its disk fails every read of the replica.
	if err := disk.SetFault(faultfs.Fault{Ops: faultfs.OpRead, Path: "ro*", Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(disk.Counters().Injected) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("n2's restart never read its replica")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // past the first reopen attempt too
	disk.Clear()
	cleared := time.Now()
	if acked, _ := writeBlocks(ctx, client, 128, 64, nil); len(acked) != 64 {
		t.Fatalf("writes after the fault: %d of 64 acknowledged", len(acked))
	}
	waitVolume(t, ctx, td, n1, "ro", 3*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	})
	t.Logf("n2 UpToDate and in sync %s after its disk reads again", time.Since(cleared).Round(time.Millisecond))
	out, stderr, err := td.CLI(ctx, n1, "volume", "verify", "ro", "--output", "json")
	if err != nil {
		t.Fatalf("volume verify: %v\n%s%s", err, out, stderr)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after the resync: %v: %s", err, out)
	}
}
