package consensus

import (
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
)

// Sparse shards keep a 50 ms heartbeat and a 0.5 s election whatever the
// tick (raft.rtt_ms), never faster than the metadata shard, and always
// with an election longer than two heartbeats (dragonboat refuses less).
func TestSparseConfig(t *testing.T) {
	for _, tc := range []struct {
		rtt, el, hb    uint64
		wantEl, wantHb uint64
	}{
		{rtt: 10, el: 10, hb: 1, wantEl: 50, wantHb: 5},  // the former default tick
		{rtt: 50, el: 10, hb: 1, wantEl: 10, wantHb: 1},  // the default
		{rtt: 100, el: 10, hb: 1, wantEl: 10, wantHb: 1}, // the host's own is slower: kept
		{rtt: 30, el: 4, hb: 1, wantEl: 17, wantHb: 2},   // rounded up to whole ticks
		{rtt: 200, el: 2, hb: 1, wantEl: 3, wantHb: 1},   // at least 2×heartbeat+1
	} {
		rc := config.Config{ElectionRTT: tc.el, HeartbeatRTT: tc.hb}
		sparseConfig(&rc, HostConfig{RTTMillisecond: tc.rtt}, tc.rtt)
		if rc.ElectionRTT != tc.wantEl || rc.HeartbeatRTT != tc.wantHb || !rc.Quiesce {
			t.Errorf("rtt %d ms, election %d, heartbeat %d: got election %d heartbeat %d quiesce %v, want %d, %d, true",
				tc.rtt, tc.el, tc.hb, rc.ElectionRTT, rc.HeartbeatRTT, rc.Quiesce, tc.wantEl, tc.wantHb)
		}
	}
}

// On the volume shards' own host (a slower tick), the sparse settings are
// the same times in its ticks: never faster than the metadata shard's
// (at its tick), an election above two heartbeats.
func TestSparseConfigOnTheVolumeHost(t *testing.T) {
	for _, tc := range []struct {
		metaRTT, el, hb, volRTT uint64
		wantEl, wantHb          uint64
	}{
		{metaRTT: 100, el: 5, hb: 1, volRTT: 250, wantEl: 3, wantHb: 1},  // the defaults: 0.75 s, 250 ms
		{metaRTT: 100, el: 10, hb: 1, volRTT: 250, wantEl: 4, wantHb: 1}, // the metadata shard elects after 1 s: 1 s
		{metaRTT: 10, el: 10, hb: 1, volRTT: 100, wantEl: 5, wantHb: 1},  // 0.5 s
		{metaRTT: 100, el: 5, hb: 3, volRTT: 200, wantEl: 5, wantHb: 2},  // a 300 ms metadata heartbeat: 400 ms
	} {
		rc := config.Config{ElectionRTT: tc.el, HeartbeatRTT: tc.hb}
		sparseConfig(&rc, HostConfig{RTTMillisecond: tc.metaRTT, ElectionRTT: tc.el, HeartbeatRTT: tc.hb}, tc.volRTT)
		if rc.ElectionRTT != tc.wantEl || rc.HeartbeatRTT != tc.wantHb {
			t.Errorf("metadata %d ms × (%d, %d), volume tick %d ms: election %d heartbeat %d, want %d, %d",
				tc.metaRTT, tc.el, tc.hb, tc.volRTT, rc.ElectionRTT, rc.HeartbeatRTT, tc.wantEl, tc.wantHb)
		}
	}
}

// TestWakeIfLedBy: a lost member's shards are woken only where it leads
// (or no leader is known), not every shard it is a member of.
func TestWakeIfLedBy(t *testing.T) {
	hosts := newCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	const shard = 2002
	members := map[uint64]string{1: hosts[0].addr, 2: hosts[1].addr, 3: hosts[2].addr}
	vols := make([]*Volumes, 3)
	for i, th := range hosts {
		vols[i] = NewVolumes(th.h, th.name)
		if err := vols[i].Start(ShardSpec{ShardID: shard, ReplicaID: uint64(i + 1), Members: members}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vols[0].Init(ctx, VolumeRecord{Name: "v", ShardID: shard, Size: 1 << 20, Primary: "n1",
		Replicas: map[string]*ReplicaRecord{"n1": {State: UpToDate}, "n2": {State: UpToDate}, "n3": {State: UpToDate}}}); err != nil {
		t.Fatal(err)
	}
	var leader uint64
	for leader == 0 {
		if id, _, ok := hosts[0].h.Leader(shard); ok {
			leader = id
		}
		if ctx.Err() != nil {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	follower := (leader % 3) // a replica ID other than the leader's, 0-based host index
	other := (leader+1)%3 + 1
	if other == leader {
		t.Fatal("test setup")
	}
	// Every replica knows the leader once it has applied the init.
	for {
		if id, _, ok := hosts[follower].h.Leader(shard); ok && id == leader {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the follower does not know the leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if vols[follower].WakeIfLedBy(shard, other) {
		t.Fatalf("woken for the loss of replica %d, which does not lead (leader %d)", other, leader)
	}
	if !vols[follower].WakeIfLedBy(shard, leader) {
		t.Fatalf("not woken for the loss of its leader %d", leader)
	}
	if !vols[follower].WakeIfLedBy(9999, leader) {
		t.Fatal("a shard whose leader is not known (not running here) must be woken")
	}
}
