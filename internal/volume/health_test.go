package volume

import (
	"strings"
	"testing"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestVolumeHealth(t *testing.T) {
	const (
		utd = tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
		st  = tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET
		out = tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	)
	vol := func(answeredBy string, reps ...*tandemv1.VolumeReplica) *tandemv1.VolumeInfo {
		return &tandemv1.VolumeInfo{Name: "v", Primary: "n1", AnsweredBy: answeredBy, NbdUnix: "nbd+unix:///v?socket=/s",
			Replicas: append([]*tandemv1.VolumeReplica{{Node: "n1", State: utd, Primary: true}}, reps...)}
	}
	for _, tc := range []struct {
		name, catalog string
		v             *tandemv1.VolumeInfo
		state, why    string
	}{
		{"in sync", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: utd, Link: "in-sync"}), "ready", ""},
		{"resyncing", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: st, Link: "syncing", DirtyBytes: 35 << 20}), "syncing", "n2 SyncTarget, 35 MiB to resync"},
		{"outdated", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: out, Link: "outdated", DirtyBytes: 4096}), "degraded", "n2 Outdated (link outdated, 4 KiB behind)"},
		{"link down but state UpToDate", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: utd, Link: "fencing"}), "degraded", "n2 UpToDate (link fencing"},
		{"degraded wins over syncing", consensus.VolumeReady, vol("n1",
			&tandemv1.VolumeReplica{Node: "n2", State: st, Link: "syncing"},
			&tandemv1.VolumeReplica{Node: "n3", State: out, Link: "outdated"}), "degraded", "n3 Outdated"},
		{"primary silent", consensus.VolumeReady, vol("n2", &tandemv1.VolumeReplica{Node: "n2", State: utd}), "degraded", "primary n1 does not serve it"},
		{"primary diskless", consensus.VolumeReady, &tandemv1.VolumeInfo{Name: "v", Primary: "n1", AnsweredBy: "n1", NbdUnix: "nbd+unix:///v?socket=/s",
			Replicas: []*tandemv1.VolumeReplica{{Node: "n1", State: tandemv1.ReplicaState_REPLICA_STATE_FAILED, Primary: true, Link: "Diskless (detached after I/O error: EIO)"},
				{Node: "n2", State: utd, Link: "in-sync"}}}, "degraded", "primary n1 Failed (Diskless (detached after I/O error: EIO))"},
		{"nobody answered", consensus.VolumeReady, &tandemv1.VolumeInfo{Name: "v"}, "degraded", "no node"},
		{"deleting stays deleting", consensus.VolumeDeleting, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: out}), "deleting", ""},
		{"creating stays creating", consensus.VolumeCreating, &tandemv1.VolumeInfo{}, "creating", ""},
	} {
		state, why := volumeHealth(tc.catalog, tc.v)
		if state != tc.state || !strings.Contains(why, tc.why) || (tc.why == "" && why != "") {
			t.Errorf("%s: got %q, %q; want %q, %q", tc.name, state, why, tc.state, tc.why)
		}
	}
}
