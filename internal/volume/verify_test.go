package volume

import (
	"strings"
	"testing"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/replication"
)

func TestVerifyReplicasNamesEverySkip(t *testing.T) {
	states := map[string]consensus.ReplicaState{"n1": consensus.UpToDate, "n2": consensus.SyncTarget, "n3": consensus.Outdated, "n4": consensus.UpToDate}
	links := map[string]replication.PeerStatus{
		"n2": {Name: "n2", State: "syncing", DirtyBytes: 35 << 20},
		"n3": {Name: "n3", State: "outdated"},
		"n4": {Name: "n4", State: "in-sync"},
	}
	got := verifyReplicas("n1", []string{"n1", "n2", "n3", "n4", "n5"}, states, links, []string{"n4"}, nil)
	want := map[string]string{"n2": "resync running", "n3": "not in sync (state Outdated, link outdated)", "n4": "", "n5": "no replication link"}
	if len(got) != len(want) {
		t.Fatalf("got %d replicas, want %d (the primary left out): %v", len(got), len(want), got)
	}
	for _, r := range got {
		w, ok := want[r.Node]
		switch {
		case !ok:
			t.Errorf("unexpected replica %s", r.Node)
		case r.Compared != (w == ""):
			t.Errorf("%s: compared %v", r.Node, r.Compared)
		case w != "" && !strings.Contains(r.SkippedReason, w):
			t.Errorf("%s: reason %q, want it to contain %q", r.Node, r.SkippedReason, w)
		}
	}
	if only := verifyReplicas("n1", []string{"n1", "n2", "n4"}, states, links, []string{"n4"}, []string{"n4"}); len(only) != 1 || only[0].Node != "n4" {
		t.Errorf("with only=[n4]: %v", only)
	}
}
