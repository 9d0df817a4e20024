package consensus

import (
	"time"

	"github.com/lni/dragonboat/v4/config"
)

// Sparse shards (ShardSpec.Sparse) are the volume shards: one per volume,
// a few entries in a volume's life (promotions, replica states). With the
// metadata shard's settings each would heartbeat every round trip to its
// peers whether anything happens or not, so a node's idle CPU grew with
// the number of volumes. They heartbeat every sparseHeartbeat and elect
// after sparseElection (rounded up to whole ticks of raft.rtt_ms, and never
// faster than the metadata shard) and quiesce (dragonboat's Quiesce: no
// heartbeats at all) once idle for ten election timeouts.
//
// A quiesced follower does not notice that its leader died until something
// happens on the shard. A linearizable read wakes it (dragonboat counts a
// ReadIndex as activity), a proposal does not: Propose therefore wakes a
// sparse shard with a ReadIndex first, so that a promotion after the loss
// of the leader's node elects a new leader instead of waiting on the dead
// one until its deadline; HA wakes them earlier still (Volumes.Wake).

// The sparse shards' heartbeat and election timeout: an election after
// 0.5–1 s (dragonboat randomises it between one and two timeouts), or
// after the metadata shard's if slower.
const (
	sparseHeartbeatMs = 50
	sparseElectionMs  = 500
)

// sparseConfig sets rc, the metadata shard's settings, to the sparse
// heartbeat and election, in ticks of rtt milliseconds (the tick of the
// host the shard runs on: cfg's, or the volume shards' host's). Neither is
// ever faster than the metadata shard's, and the election timeout stays
// above two heartbeats.
func sparseConfig(rc *config.Config, cfg HostConfig, rtt uint64) {
	hb := max(ceilDiv(sparseHeartbeatMs, rtt), ceilDiv(cfg.RTTMillisecond*rc.HeartbeatRTT, rtt))
	rc.ElectionRTT = max(ceilDiv(sparseElectionMs, rtt), ceilDiv(cfg.RTTMillisecond*rc.ElectionRTT, rtt), 2*hb+1)
	rc.HeartbeatRTT = hb
	rc.Quiesce = true
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// electionOf is shardID's election timeout (the shortest; dragonboat
// randomises up to twice as long).
func (h *Host) electionOf(shardID uint64) time.Duration {
	el := h.cfg.ElectionRTT
	if _, ok := h.sparse.Load(shardID); ok {
		rc := config.Config{ElectionRTT: h.cfg.ElectionRTT, HeartbeatRTT: h.cfg.HeartbeatRTT}
		sparseConfig(&rc, h.cfg, h.rttOf(shardID))
		el = rc.ElectionRTT
	}
	return time.Duration(el*h.rttOf(shardID)) * time.Millisecond
}

// attemptTimeoutOf is attemptTimeout, longer for a sparse shard by its
// slower election.
func (h *Host) attemptTimeoutOf(shardID uint64) time.Duration {
	meta := time.Duration(h.cfg.RTTMillisecond*h.cfg.ElectionRTT) * time.Millisecond
	return time.Duration(float64(h.attemptTimeout()) * float64(h.electionOf(shardID)) / float64(meta))
}

// Wake makes this node's replica of a quiesced volume shard active again
// (see wake), without waiting: HA wakes the shards of a dead node's volumes
// when it declares the node dead, so that those it led elect a new leader
// while the node is fenced, not one after another at each promotion.
func (v *Volumes) Wake(shardID uint64) { v.h.wake(shardID) }

// WakeIfLedBy wakes this node's replica of the shard (Wake) unless it
// knows a leader other than replicaID, and reports whether it did. A shard
// whose leader lives needs no election when another member is lost, and
// waking all of a lost node's shards at once (1000 at 1000 volumes, on
// every survivor) starved the metadata shard of the CPU its leases need.
func (v *Volumes) WakeIfLedBy(shardID, replicaID uint64) bool {
	if id, _, ok := v.h.Leader(shardID); ok && id != replicaID {
		return false
	}
	v.h.wake(shardID)
	return true
}

// wake makes a quiesced sparse shard's replica active again: a ReadIndex is
// activity to dragonboat, and an active follower whose leader is gone
// elects a new one. The answer is not waited for.
func (h *Host) wake(shardID uint64) {
	if _, ok := h.sparse.Load(shardID); !ok {
		return
	}
	rs, err := h.nhOf(shardID).ReadIndex(shardID, h.attemptTimeoutOf(shardID))
	if err != nil {
		return // not ready or busy: the proposal's own retries go on
	}
	go func() {
		<-rs.ResultC()
		rs.Release()
	}()
}
