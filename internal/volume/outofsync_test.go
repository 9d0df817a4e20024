package volume

import (
	"testing"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/replication"
)

func TestOutOfSyncBeforeEpoch(t *testing.T) {
	hist := []consensus.VolumeEvent{
		{Epoch: 1, What: "created with primary n1"},
		{Epoch: 1, What: "n2 UpToDate -> Outdated"},
		{Epoch: 2, What: "promoted n3 (was n1)"},
	}
	r := &consensus.VolumeRecord{Epoch: 2, History: hist}
	for _, tc := range []struct {
		name string
		r    *consensus.VolumeRecord
		peer string
		want bool
	}{
		{"outdated by the old primary", r, "n2", true},
		{"the deposed primary itself", r, "n1", false},
		{"first epoch: the primary saw every write", &consensus.VolumeRecord{Epoch: 1, History: hist[:2]}, "n2", false},
		{"outdated by this epoch's primary", &consensus.VolumeRecord{Epoch: 2, History: append(hist[:3:3], consensus.VolumeEvent{Epoch: 2, What: "n2 Outdated -> SyncTarget"})}, "n2", false},
		{"history trimmed: assume the worst", &consensus.VolumeRecord{Epoch: 5}, "n1", true},
		{"a name that is a prefix of another", &consensus.VolumeRecord{Epoch: 2, History: []consensus.VolumeEvent{{Epoch: 2, What: "n22 UpToDate -> Outdated"}}}, "n2", true},
	} {
		if got := outOfSyncBeforeEpoch(tc.r, tc.peer); got != tc.want {
			t.Errorf("%s: outOfSyncBeforeEpoch(%s) = %v, want %v", tc.name, tc.peer, got, tc.want)
		}
	}
}

func TestLinksDisagree(t *testing.T) {
	rec := func(states map[string]consensus.ReplicaState) *consensus.VolumeRecord {
		r := &consensus.VolumeRecord{Epoch: 1, Primary: "n1", Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: consensus.UpToDate}}}
		for n, s := range states {
			r.Replicas[n] = &consensus.ReplicaRecord{State: s}
		}
		return r
	}
	links := []replication.PeerStatus{{Name: "n2", State: "in-sync"}, {Name: "n3", State: "outdated"}}
	for _, tc := range []struct {
		name string
		r    *consensus.VolumeRecord
		want bool
	}{
		{"agree", rec(map[string]consensus.ReplicaState{"n2": consensus.UpToDate, "n3": consensus.Outdated}), false},
		{"in sync, recorded SyncSource", rec(map[string]consensus.ReplicaState{"n2": consensus.SyncSource, "n3": consensus.Outdated}), false},
		{"a late fence: linked in sync, recorded Outdated", rec(map[string]consensus.ReplicaState{"n2": consensus.Outdated, "n3": consensus.Outdated}), true},
		{"linked in sync, recorded SyncTarget (a local copy lagging a resync)", rec(map[string]consensus.ReplicaState{"n2": consensus.SyncTarget}), true},
		{"a peer not linked in sync is the resync's business", rec(map[string]consensus.ReplicaState{"n2": consensus.UpToDate, "n3": consensus.UpToDate}), false},
		{"a peer the record does not name", rec(nil), false},
	} {
		if got := linksDisagree(links, tc.r); got != tc.want {
			t.Errorf("%s: linksDisagree = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAllInSync: a primary polls slowly only when nothing is left to
// converge, in the record or on its links (issue 17).
func TestAllInSync(t *testing.T) {
	rec := func(states map[string]consensus.ReplicaState, reconcile bool) *consensus.VolumeRecord {
		r := &consensus.VolumeRecord{Epoch: 1, Primary: "n1", Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: consensus.UpToDate}}}
		for n, s := range states {
			r.Replicas[n] = &consensus.ReplicaRecord{State: s, Reconcile: reconcile}
		}
		return r
	}
	inSync := []replication.PeerStatus{{Name: "n2", State: "in-sync"}}
	for _, tc := range []struct {
		name  string
		r     *consensus.VolumeRecord
		links []replication.PeerStatus
		want  bool
	}{
		{"all UpToDate and linked", rec(map[string]consensus.ReplicaState{"n2": consensus.UpToDate}, false), inSync, true},
		{"a peer Outdated", rec(map[string]consensus.ReplicaState{"n2": consensus.Outdated}, false), []replication.PeerStatus{{Name: "n2", State: "outdated"}}, false},
		{"a peer still to reconcile", rec(map[string]consensus.ReplicaState{"n2": consensus.UpToDate}, true), inSync, false},
		{"recorded UpToDate, link resyncing", rec(map[string]consensus.ReplicaState{"n2": consensus.UpToDate}, false), []replication.PeerStatus{{Name: "n2", State: "syncing"}}, false},
		{"a resync under way", rec(map[string]consensus.ReplicaState{"n2": consensus.SyncTarget}, false), []replication.PeerStatus{{Name: "n2", State: "syncing"}}, false},
		{"own disk detached", &consensus.VolumeRecord{Epoch: 1, Primary: "n1", Replicas: map[string]*consensus.ReplicaRecord{"n1": {State: consensus.Failed}, "n2": {State: consensus.UpToDate}}}, inSync, false},
	} {
		if got := allInSync(tc.r, tc.links); got != tc.want {
			t.Errorf("%s: allInSync = %v, want %v", tc.name, got, tc.want)
		}
	}
}
