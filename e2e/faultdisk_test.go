package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestPowerLossKeepsAcknowledgedWrites: every node's data directory is on
// faultfs (internal/faultfs), which keeps what tandemd did not sync in
// memory. Both replicas of a volume lose power in the middle of a FUA
// write run: everything tandemd never synced (Raft log, metadata and
// volume data alike) is dropped. After power comes back, every write the
// client saw acknowledged reads back from the volume.
func TestPowerLossKeepsAcknowledgedWrites(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	disks := map[string]*faultfs.FS{}
	for _, n := range c.Nodes {
		f, err := td.FaultDisk(n, "")
		if err != nil {
			t.Fatal(err)
		}
		disks[n.Name] = f
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "power"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "pl", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "pl")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	stop := make(chan struct{})
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		time.Sleep(3 * time.Second)
		close(stop)
		// A power cut of both replicas' hosts: the processes die, then
		// the disks lose their volatile caches.
		c.Kill(n1)
		c.Kill(n2)
		disks[n1.Name].PowerLoss()
		disks[n2.Name].PowerLoss()
	}()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	acked, failed := writeBlocks(wctx, client, 0, 16000, nil)
	wcancel()
	<-cut
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged before the power cut", len(acked))
	}
	for _, n := range []string{n1.Name, n2.Name} {
		t.Logf("%s: faultfs counters after the cut: %+v", n, disks[n].Counters())
	}
	t.Logf("%d writes acknowledged, %d failed at the power cut", len(acked), failed)

	for _, n := range []*testcluster.Node{n1, n2} {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := td.WaitStatus(ctx, n1, time.Minute, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	info := waitVolume(t, ctx, td, n1, "pl", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return v.Primary != "" && replicaState(v, v.Primary).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	var primary *testcluster.Node
	for _, n := range c.Nodes {
		if n.Name == info.Primary {
			primary = n
		}
	}
	nc, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, primary), "pl")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 4096)
	for _, b := range acked {
		if err := nc.ReadAt(ctx, buf, b*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, pattern(b)) {
			t.Fatalf("acknowledged block %d lost in the power cut (primary after: %s)", b, info.Primary)
		}
	}
}
