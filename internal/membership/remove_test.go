package membership

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func upToDate(node string) *tandemv1.VolumeReplica {
	return &tandemv1.VolumeReplica{Node: node, State: tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE}
}

func TestRisksListsWhatRemovalWouldLose(t *testing.T) {
	w := newWorld()
	w.online["10.0.0.2:7000"] = true
	ms := w.meta.ms
	ms.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: "started"}
	ms.VMs["db"] = &consensus.VMRecord{Name: "db", Node: "n3", Desired: "started"}
	for _, v := range []string{"a", "b", "c", "d"} {
		ms.Volumes[v] = &consensus.VolumeEntry{Name: v, Size: 1 << 30, Replicas: []string{"n2", "n3"}}
	}
	ms.Volumes["e"] = &consensus.VolumeEntry{Name: "e", Size: 1 << 30, Replicas: []string{"n1", "n3"}}
	// a: n2 is primary; b: n2 holds the only good copy; c: nobody answers;
	// d: both good, n3 primary, so no risk.
	w.vols["a"] = &tandemv1.VolumeInfo{Epoch: 1, Primary: "n2", Replicas: []*tandemv1.VolumeReplica{upToDate("n2"), upToDate("n3")}}
	w.vols["b"] = &tandemv1.VolumeInfo{Epoch: 1, Primary: "n3", Replicas: []*tandemv1.VolumeReplica{upToDate("n2"), {Node: "n3", State: tandemv1.ReplicaState_REPLICA_STATE_OUTDATED}}}
	w.vols["d"] = &tandemv1.VolumeInfo{Epoch: 1, Primary: "n3", Replicas: []*tandemv1.VolumeReplica{upToDate("n2"), upToDate("n3")}}

	got := w.manager().Risks(context.Background(), ms, ms.Nodes["n2"])
	want := []string{
		"node n2 is online (it answers at 10.0.0.2:7000) and holds replicas of volume a, b, c, d; stop tandemd on it first",
		"VM web is placed on node n2 (desired started); migrate it or delete it first",
		"node n2 is the primary of volume a; promote another replica first",
		"node n2 holds the only UpToDate replica of volume b (1 GiB); its data would be lost",
		"volume c has a replica on node n2 and no replica answered, so nothing shows another one is UpToDate",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("risks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := w.manager().Risks(context.Background(), ms, ms.Nodes["n1"]); len(got) != 1 || !strings.Contains(got[0], "volume e") {
		t.Fatalf("offline node with an unanswered volume: %q", got)
	}
}

func TestRemoveRefusesWithRisksAndForceOverrides(t *testing.T) {
	w := newWorld()
	w.meta.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: "started"}
	m := w.manager()
	_, err := m.Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n2"})
	if !statetest.IsStatus(err, codes.FailedPrecondition, "refusing to remove node n2:\n  - VM web is placed on node n2") ||
		!strings.Contains(err.Error(), "(--force overrides these checks)") {
		t.Fatalf("unforced: %v", err)
	}
	if j := w.meta.j.List(); len(j) != 0 {
		t.Fatalf("a refused removal changed %q", j)
	}
	resp, err := m.Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n2", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Overridden) != 1 || resp.Node.State != consensus.NodeRemoved {
		t.Fatalf("forced: %+v", resp)
	}
	// Recorded first, so the running node learns it; then out of Raft.
	if j, want := w.meta.j.List(), []string{"state n2 removed", "remove-replica 10.0.0.2:7001"}; !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
	// Recorded and out of Raft: nothing left to do.
	_, err = m.Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n2"})
	if !statetest.IsStatus(err, codes.FailedPrecondition, "node n2 was already removed") {
		t.Fatalf("again: %v", err)
	}
}

func TestRemoveFinishesAHalfDoneRemovalWithoutChecks(t *testing.T) {
	w := newWorld()
	w.meta.ms.Nodes["n3"].State = consensus.NodeRemoved
	w.online["10.0.0.3:7000"] = true // would be a risk, but the checks passed before
	if _, err := w.manager().Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n3"}); err != nil {
		t.Fatal(err)
	}
	if j, want := w.meta.j.List(), []string{"remove-replica 10.0.0.3:7001"}; !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
}

func TestRemoveRefusals(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world)
		node  string
		code  codes.Code
		msg   string
	}{
		{"no quorum", func(w *world) { w.quorate = false }, "n2", codes.FailedPrecondition, "no quorum"},
		{"itself", nil, "n1", codes.FailedPrecondition, "node n1 cannot remove itself; run the command on another member"},
		{"unknown", nil, "n9", codes.NotFound, `no node named "n9" in cluster "c1"`},
		{"last voter", func(w *world) {
			w.meta.mem.Voters = map[uint64]string{2: "10.0.0.2:7001"}
		}, "n2", codes.FailedPrecondition, "node n2 is the last voter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			if c.setup != nil {
				c.setup(w)
			}
			_, err := w.manager().Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: c.node, Force: true})
			if !statetest.IsStatus(err, c.code, c.msg) {
				t.Fatalf("got %v, want %v %q", err, c.code, c.msg)
			}
			if j := w.meta.j.List(); len(j) != 0 {
				t.Fatalf("a refused removal changed %q", j)
			}
		})
	}
}

// Once the removal committed, and before the node leaves the Raft group,
// the removed node is told (with who removed it and when); the answer
// says what it did. A node that cannot be told does not stop the removal.
func TestRemoveTellsTheRemovedNode(t *testing.T) {
	w := newWorld()
	w.cluster = &Cluster{Name: "c1", ID: "cid"}
	resp, err := w.manager().Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"state n2 removed", "tell n2 at 10.0.0.2:7000: removed from cid by n1 at 2026-01-02T03:04:05Z", "remove-replica 10.0.0.2:7001"}
	if j := w.meta.j.List(); !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
	if resp.Notice != "node n2 was told of its removal and stopped for good: 1 VMs destroyed, 0 primaries frozen (its data stays on disk)" {
		t.Fatalf("notice %q", resp.Notice)
	}

	w.tellErr = status.Error(codes.Unavailable, "connection refused")
	resp, err = w.manager().Remove(context.Background(), &tandemv1.RemoveNodeRequest{Name: "n3"})
	if err != nil {
		t.Fatalf("a node that cannot be told stopped the removal: %v", err)
	}
	if !strings.Contains(resp.Notice, "node n3 could not be told of its removal (connection refused); it learns of it when it next contacts a member") {
		t.Fatalf("notice %q", resp.Notice)
	}
	if j := w.meta.j.List(); j[len(j)-1] != "remove-replica 10.0.0.3:7001" {
		t.Fatalf("journal %q", j)
	}
}
