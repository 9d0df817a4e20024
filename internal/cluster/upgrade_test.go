package cluster

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestUpgradeStatusMidUpgrade: n1 and n2 run the newer release, n3 (down)
// the older one: upgrade-status names n3 as the node to upgrade and the
// feature it holds back, status adds an advisory, and the node table shows
// n3's recorded release although it does not answer.
func TestUpgradeStatusMidUpgrade(t *testing.T) {
	meta := newFakeMeta()
	for _, n := range []string{"n1", "n2"} {
		meta.ms.Nodes[n].Version, meta.ms.Nodes[n].Protocol = "v2", 2
	}
	meta.ms.Nodes["n3"].Version, meta.ms.Nodes["n3"].Protocol = "v1", 1
	m, _ := newManager(t, meta, true)
	ctx := context.Background()
	up, err := m.UpgradeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if up.ClusterVersion != 1 || up.AnsweredBy != "n1" || len(up.Nodes) != 3 {
		t.Fatalf("upgrade status: %+v", up)
	}
	for _, n := range up.Nodes {
		if n.Behind != (n.Name == "n3") {
			t.Errorf("%s behind = %v", n.Name, n.Behind)
		}
	}
	var notes *tandemv1.GatedFeature
	for _, f := range up.Features {
		if f.Name == "node-notes" {
			notes = f
		}
	}
	if notes == nil || notes.Enabled || notes.Level != 2 || strings.Join(notes.WaitingOn, ",") != "n3" {
		t.Fatalf("node-notes: %+v", notes)
	}
	if !strings.Contains(up.NextStep, "upgrade n3") || !strings.Contains(up.NextStep, "rises to 2") {
		t.Fatalf("next step: %q", up.NextStep)
	}
	st := m.Status(ctx)
	if st.ClusterVersion != 1 || len(st.Advisories) == 0 || !strings.Contains(strings.Join(st.Advisories, "\n"), "rolling upgrade under way") {
		t.Fatalf("status: version %d, advisories %q", st.ClusterVersion, st.Advisories)
	}
	for _, n := range st.Nodes {
		if n.Name == "n3" && (n.Version != "v1" || n.Protocol != 1 || n.Health == tandemv1.Health_HEALTH_ONLINE) {
			t.Fatalf("n3 in the node table: %+v", n)
		}
	}

	// Once every node reported 2 (the state machine raised the version),
	// nothing is gated and there is nothing to upgrade.
	meta.ms.Nodes["n3"].Version, meta.ms.Nodes["n3"].Protocol = "v2", 2
	meta.ms.ClusterVersion = 2
	if up, err = m.UpgradeStatus(ctx); err != nil || up.ClusterVersion != 2 || !up.Features[0].Enabled || !strings.Contains(up.NextStep, "nothing to upgrade") {
		t.Fatalf("after the upgrade: %v %+v", err, up)
	}
	if st := m.Status(ctx); len(st.Advisories) > 0 && strings.Contains(strings.Join(st.Advisories, "\n"), "rolling upgrade") {
		t.Fatalf("advisory after the upgrade: %q", st.Advisories)
	}
}

// TestSetNoteRefusals: bad input is InvalidArgument before quorum is even
// asked, so nothing reaches Raft.
func TestSetNoteRefusals(t *testing.T) {
	m, asked := newManager(t, newFakeMeta(), true)
	for _, c := range []struct{ node, note string }{
		{"", "x"},
		{"n1", strings.Repeat("x", 257)},
		{"n1", "two\nlines"},
	} {
		_, err := m.SetNote(context.Background(), c.node, c.note)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("SetNote(%q, %q): %v", c.node, c.note, err)
		}
	}
	if *asked != 0 {
		t.Fatalf("quorum asked %d times for refused input", *asked)
	}
}
