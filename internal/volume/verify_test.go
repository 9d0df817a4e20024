package volume

import (
	"strings"
	"testing"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
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

// TestDropLeftSync: a peer that left sync during the verify is reported as
// not compared, without mismatches; the others keep theirs.
func TestDropLeftSync(t *testing.T) {
	out := &tandemv1.VerifyVolumeResponse{
		Mismatches: []*tandemv1.VerifyMismatch{{Node: "n2", Offset: 0, Length: 4096}, {Node: "n3", Offset: 8192, Length: 4096}, {Node: "n2", Offset: 65536, Length: 4096}},
		Replicas:   []*tandemv1.VerifyReplica{{Node: "n2", Compared: true, MismatchedBytes: 8192}, {Node: "n3", Compared: true, MismatchedBytes: 4096}},
	}
	dropLeftSync(out, map[string]string{"n2": "outdated"})
	if len(out.Mismatches) != 1 || out.Mismatches[0].Node != "n3" {
		t.Fatalf("mismatches %v: want only n3's", out.Mismatches)
	}
	n2, n3 := out.Replicas[0], out.Replicas[1]
	if n2.Compared || n2.MismatchedBytes != 0 || !strings.Contains(n2.SkippedReason, "left sync during the verify (link outdated)") {
		t.Fatalf("n2: %+v", n2)
	}
	if !n3.Compared || n3.MismatchedBytes != 4096 {
		t.Fatalf("n3: %+v", n3)
	}
}
