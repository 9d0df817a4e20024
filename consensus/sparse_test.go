package consensus

import (
	"testing"

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
		sparseConfig(&rc, tc.rtt)
		if rc.ElectionRTT != tc.wantEl || rc.HeartbeatRTT != tc.wantHb || !rc.Quiesce {
			t.Errorf("rtt %d ms, election %d, heartbeat %d: got election %d heartbeat %d quiesce %v, want %d, %d, true",
				tc.rtt, tc.el, tc.hb, rc.ElectionRTT, rc.HeartbeatRTT, rc.Quiesce, tc.wantEl, tc.wantHb)
		}
	}
}
