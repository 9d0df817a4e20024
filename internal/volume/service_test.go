package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	utd      = tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	outdated = tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
)

// answer is node's VolumeStatus answer about v with primary at epoch.
func answer(node, primary string, epoch uint64, reps ...*tandemv1.VolumeReplica) *tandemv1.VolumeInfo {
	v := &tandemv1.VolumeInfo{Name: "v", AnsweredBy: node, Primary: primary, Epoch: epoch, Replicas: reps}
	if node == primary {
		v.NbdUnix = "nbd+unix:///v?socket=/run/tandem/nbd.sock"
	}
	return v
}

// TestShow: show keeps the freshest answer, the primary's at equal epochs,
// names the VM using the volume and grades its health; it finds a volume
// this node has not applied yet with a fresh read.
func TestShow(t *testing.T) {
	reps := []*tandemv1.VolumeReplica{{Node: "n1", State: utd}, {Node: "n2", State: utd, Primary: true}, {Node: "n3", State: outdated, Link: "outdated", DirtyBytes: 8192}}
	for _, tc := range []struct {
		name          string
		answers       map[string]*tandemv1.VolumeInfo
		by            string
		state, wanted string
	}{
		{"the primary's answer wins", map[string]*tandemv1.VolumeInfo{
			"n1": answer("n1", "n1", 3), // an old epoch: n1 was primary before
			"n2": answer("n2", "n2", 4, reps...),
			"n3": answer("n3", "n2", 4),
		}, "n2", volumeDegraded, "n3 Outdated (link outdated, 8 KiB behind)"},
		{"the primary silent", map[string]*tandemv1.VolumeInfo{
			"n1": answer("n1", "n2", 4), "n3": answer("n3", "n2", 4),
		}, "n1", volumeDegraded, "the primary n2 did not answer; this is n1's view"},
		{"nobody answers", map[string]*tandemv1.VolumeInfo{}, "", volumeDegraded, "no node holding the volume answered"},
		{"in sync", map[string]*tandemv1.VolumeInfo{
			"n2": answer("n2", "n2", 4, &tandemv1.VolumeReplica{Node: "n2", State: utd, Primary: true}, &tandemv1.VolumeReplica{Node: "n1", State: utd, Link: "in-sync"}),
		}, "n2", consensus.VolumeReady, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			for n, a := range tc.answers {
				w.peers[n].status = a
			}
			got, err := w.manager(t).Show(context.Background(), "v", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got.AnsweredBy != tc.by || got.State != tc.state || got.Warning != tc.wanted || got.UsedBy != "vm1" {
				t.Errorf("got answered by %q, state %q, warning %q, used by %q; want %q, %q, %q, vm1",
					got.AnsweredBy, got.State, got.Warning, got.UsedBy, tc.by, tc.state, tc.wanted)
			}
		})
	}
	t.Run("created elsewhere, not applied here", func(t *testing.T) {
		w := newWorld()
		w.meta.local = &consensus.MetaState{Nodes: w.meta.fresh.Nodes}
		w.peers["n2"].status = answer("n2", "n2", 1)
		got, err := w.manager(t).Show(context.Background(), "v", time.Second)
		if err != nil || got.AnsweredBy != "n2" {
			t.Fatalf("got %v, %v", got, err)
		}
		if _, err := w.manager(t).Show(context.Background(), "nope", time.Second); !statetest.IsStatus(err, codes.NotFound, "") {
			t.Fatalf("an unknown volume: %v", err)
		}
	})
}

// TestRefusals: the admin calls that must not act refuse before they
// change anything or ask any node to.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		setup func(*world)
		call  func(*Manager) error
		code  codes.Code
		msg   string
	}{
		{"create without quorum", func(w *world) { w.quorate = false },
			func(m *Manager) error {
				_, err := m.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "new", SizeBytes: 1 << 20, Replicas: 3})
				return err
			}, codes.FailedPrecondition, "no quorum"},
		{"create an existing name", nil,
			func(m *Manager) error {
				_, err := m.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "v", SizeBytes: 1 << 20})
				return err
			}, codes.AlreadyExists, `volume "v" already exists`},
		{"create a bad size", nil,
			func(m *Manager) error {
				_, err := m.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "new", SizeBytes: 1000})
				return err
			}, codes.InvalidArgument, "must be a positive multiple of 4 KiB"},
		{"promote a node without a replica", func(w *world) {
			w.meta.fresh.Nodes["n4"] = &consensus.NodeRecord{Name: "n4", State: consensus.NodeMember}
		}, func(m *Manager) error {
			_, err := m.Promote(ctx, &tandemv1.PromoteVolumeRequest{Name: "v", Node: "n4"})
			return err
		}, codes.InvalidArgument, `node "n4" holds no replica of v`},
		{"promote a started VM's disk away from it", func(w *world) {
			w.meta.fresh.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{Volumes: []string{"v"}}}
		}, func(m *Manager) error {
			_, err := m.Promote(ctx, &tandemv1.PromoteVolumeRequest{Name: "v", Node: "n3"})
			return err
		}, codes.FailedPrecondition, "volume v is a disk of VM web, which is started on n2: promoting it on n3 would pause the VM"},
		{"discard the primary's data", func(w *world) { w.peers["n2"].status = answer("n2", "n2", 4) },
			func(m *Manager) error {
				_, err := m.Resync(ctx, &tandemv1.ResyncVolumeRequest{Name: "v", DiscardNode: "n2"})
				return err
			}, codes.FailedPrecondition, "n2 is the primary of v"},
		{"discard with the primary silent", func(w *world) { w.peers["n3"].status = answer("n3", "n2", 4) },
			func(m *Manager) error {
				_, err := m.Resync(ctx, &tandemv1.ResyncVolumeRequest{Name: "v", DiscardNode: "n3"})
				return err
			}, codes.Unavailable, "the primary of v does not answer; nothing was discarded"},
		{"delete an attached volume", func(w *world) {
			a := answer("n2", "n2", 4)
			a.NbdConnections = 2
			w.peers["n2"].status = a
		}, func(m *Manager) error {
			_, err := m.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: "v"})
			return err
		}, codes.FailedPrecondition, "volume v is attached (2 NBD client(s) connected to its primary n2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			if tc.setup != nil {
				tc.setup(w)
			}
			err := tc.call(w.manager(t))
			if err == nil || !statetest.IsStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v; want %s containing %q", err, tc.code, tc.msg)
			}
			if calls := w.j.List(); len(calls) > 0 {
				t.Errorf("refused, yet it did %v", calls)
			}
		})
	}
}

// TestResyncDiscard: discarding a secondary's data asks that node first,
// then the primary to resync it in full.
func TestResyncDiscard(t *testing.T) {
	w := newWorld()
	w.peers["n2"].status = answer("n2", "n2", 4)
	if _, err := w.manager(t).Resync(context.Background(), &tandemv1.ResyncVolumeRequest{Name: "v", DiscardNode: "n3"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.j.List(), "; "); got != "discard v on n3; discard-peer n3 on n2" {
		t.Errorf("calls: %s", got)
	}
}

// TestPromoteStartedVMDisk: a started VM's disk is promoted on the VM's own
// node, or elsewhere with --force (the refusal is in TestRefusals).
func TestPromoteStartedVMDisk(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		node  string
		force bool
	}{{"on the VM's node", "n2", false}, {"elsewhere, forced", "n3", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			w.meta.fresh.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStarted, Spec: consensus.VMSpecRecord{Volumes: []string{"v"}}}
			if _, err := w.manager(t).Promote(ctx, &tandemv1.PromoteVolumeRequest{Name: "v", Node: tc.node, Force: tc.force}); err != nil {
				t.Fatal(err)
			}
			if calls := w.j.List(); !slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "promote") && strings.Contains(c, tc.node) }) {
				t.Fatalf("no promote on %s: %v", tc.node, calls)
			}
		})
	}
}

// TestListSkipsSilentNode: with a node that does not answer, a List of
// many volumes waits out the Show timeout for it once per parallel batch,
// not once per volume (issue 17: 1000 volumes and a dead node made the
// list take 30 s and more during a failover), and still lists every
// volume from the other nodes' answers.
func TestListSkipsSilentNode(t *testing.T) {
	w := newWorld()
	const volumes = 4 * listParallel
	for i := range volumes {
		n := fmt.Sprintf("v%03d", i)
		w.meta.local.Volumes[n] = &consensus.VolumeEntry{Name: n, ShardID: uint64(200 + i), Size: 1 << 20, Replicas: []string{"n1", "n2", "n3"}, State: consensus.VolumeReady}
	}
	w.peers["n1"].status = answer("n1", "n2", 4)
	w.peers["n2"].status = answer("n2", "n2", 4, &tandemv1.VolumeReplica{Node: "n2", State: utd, Primary: true})
	w.peers["n3"].hang = true
	resp, err := w.manager(t).List(t.Context(), &tandemv1.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetVolumes()); got != volumes+1 {
		t.Fatalf("listed %d volumes, want %d", got, volumes+1)
	}
	for _, v := range resp.GetVolumes() {
		if v.GetAnsweredBy() != "n2" {
			t.Fatalf("volume %s answered by %q, want the primary n2", v.GetName(), v.GetAnsweredBy())
		}
	}
	if asked := w.peers["n3"].asked.Load(); asked > listParallel {
		t.Errorf("the silent node was asked %d times for %d volumes; at most one parallel batch (%d) should wait for it", asked, volumes+1, listParallel)
	}
	if asked := w.peers["n2"].asked.Load(); asked != volumes+1 {
		t.Errorf("n2 was asked %d times, want %d", asked, volumes+1)
	}

	// cluster status's volume warnings, 8 volumes at a time.
	w.peers["n3"].asked.Store(0)
	warnings := w.manager(t).Warnings(t.Context(), w.meta.local)
	if asked := w.peers["n3"].asked.Load(); asked > 8 {
		t.Errorf("the health report asked the silent node %d times for %d volumes; at most one parallel batch (8)", asked, volumes+1)
	}
	if len(warnings) != 0 {
		t.Logf("warnings: %d, first %q", len(warnings), warnings[0])
	}
}
