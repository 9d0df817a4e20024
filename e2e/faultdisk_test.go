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
// memory. Both replicas of a volume lose power after a run of FUA writes
// and of flushed plain writes, and a last batch never flushed: everything
// tandemd never synced (Raft log, metadata and volume data alike) is
// dropped. After power comes back, every write acknowledged as durable
// (FUA, or followed by a completed flush) reads back, and no unflushed
// block is torn.
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

	// FUA writes to blocks 0…, and plain writes with a flush after every
	// batch of 8 to blocks 8192…: durable once the flush returned. The
	// volume has 16384 blocks; the last 1024 are for unflushed writes.
	const volatile = 15360
	stop := make(chan struct{})
	go func() {
		time.Sleep(3 * time.Second)
		close(stop)
	}()
	flushed := make(chan []uint64, 1)
	go func() {
		var durable []uint64
		defer func() { flushed <- durable }()
		for b := uint64(8192); b+8 <= volatile; b += 8 {
			select {
			case <-stop:
				return
			default:
			}
			for i := b; i < b+8; i++ {
				if err := client.WriteAt(ctx, pattern(i), i*4096, 0); err != nil {
					return
				}
			}
			if client.Flush(ctx) != nil {
				return
			}
			for i := b; i < b+8; i++ {
				durable = append(durable, i)
			}
		}
	}()
	acked, failed := writeBlocks(ctx, client, 0, 8192, stop)
	durable := <-flushed
	if len(acked) < 50 || len(durable) < 8 {
		t.Fatalf("only %d FUA writes and %d flushed writes acknowledged before the power cut", len(acked), len(durable))
	}
	// Last, writes nobody flushes: acknowledged, but only applied.
	for i := uint64(volatile); i < volatile+64; i++ {
		if err := client.WriteAt(ctx, pattern(i), i*4096, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A power cut of both replicas' hosts: the processes die, then the
	// disks lose their volatile caches.
	c.Kill(n1)
	c.Kill(n2)
	var dropped uint64
	for _, n := range []*testcluster.Node{n1, n2} {
		disks[n.Name].PowerLoss()
		cnt := disks[n.Name].Counters()
		dropped += cnt.DroppedBytes
		t.Logf("%s: faultfs counters after the cut: %+v", n.Name, cnt)
	}
	t.Logf("%d FUA writes acknowledged (%d failed), %d flushed writes", len(acked), failed, len(durable))
	if dropped == 0 {
		t.Fatal("the power cut dropped nothing although 64 writes were never flushed: the test would prove nothing")
	}

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
	// The record may name the primary before it serves again: a node that
	// came back without quorum for longer than its lease froze its
	// volumes, and serves once quorum is back (self-fence lifted).
	var nc *nbdclient.Client
	for deadline := time.Now().Add(time.Minute); ; {
		nc, err = nbdclient.Dial(ctx, "unix", nbdSocket(td, primary), "pl")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the primary %s does not serve pl a minute after the restart: %v", primary.Name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	defer nc.Close()
	buf := make([]byte, 4096)
	for _, b := range append(acked, durable...) {
		if err := nc.ReadAt(ctx, buf, b*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, pattern(b)) {
			t.Fatalf("durably acknowledged block %d lost in the power cut (primary after: %s)", b, info.Primary)
		}
	}
	// The unflushed writes may be there or not, but never torn.
	kept := 0
	for i := uint64(volatile); i < volatile+64; i++ {
		if err := nc.ReadAt(ctx, buf, i*4096); err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.Equal(buf, pattern(i)):
			kept++
		case !bytes.Equal(buf, make([]byte, 4096)):
			t.Fatalf("unflushed block %d is neither its old nor its new content", i)
		}
	}
	t.Logf("%d of 64 unflushed writes survived the power cut", kept)
}
