package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state/statetest"
)

// TestPlace: replicas go to the online data nodes with the most free space
// (names break ties); an even count gets a witness, a witness node first;
// named nodes are checked one by one.
func TestPlace(t *testing.T) {
	const gib = 1 << 30
	setup := func() (*world, *consensus.MetaState) {
		w := newWorld()
		ms := w.meta.fresh
		for _, n := range []string{"n4", "w1"} {
			ms.Nodes[n] = &consensus.NodeRecord{Name: n, State: consensus.NodeMember, BackendAddr: n + ":7000"}
			w.peers[n] = &fakePeer{Journal: w.j, node: n}
		}
		ms.Nodes["w1"].Role = "witness"
		ms.Nodes["j"] = &consensus.NodeRecord{Name: "j", State: consensus.NodeJoining, BackendAddr: "j:7000"}
		w.peers["j"] = &fakePeer{Journal: w.j, node: "j", free: 100 * gib}
		w.peers["n1"].free, w.peers["n2"].free, w.peers["n3"].free, w.peers["n4"].free = 5*gib, 9*gib, 5*gib, -1
		w.peers["w1"].free = gib
		return w, ms
	}
	ctx := context.Background()
	w, ms := setup()
	m := w.manager(t)
	nodes, witness, err := m.Place(ctx, ms, 2*gib, 3, nil)
	if err != nil || strings.Join(nodes, ",") != "n2,n1,n3" || witness != "" {
		t.Errorf("3 replicas: %v %q %v", nodes, witness, err)
	}
	nodes, witness, err = m.Place(ctx, ms, 2*gib, 2, nil)
	if err != nil || strings.Join(nodes, ",") != "n2,n1" || witness != "w1" {
		t.Errorf("2 replicas: %v %q %v", nodes, witness, err)
	}
	if _, _, err := m.Place(ctx, ms, 6*gib, 2, nil); !statetest.IsStatus(err, codes.ResourceExhausted, "") {
		t.Errorf("too big for two nodes: %v", err)
	}
	for _, tc := range []struct {
		want []string
		code codes.Code
		msg  string
	}{
		{[]string{"n1", "nx"}, codes.InvalidArgument, `no node named "nx" in this cluster (nodes: j, n1, n2, n3, n4, w1)`},
		{[]string{"n1"}, codes.InvalidArgument, "1 node(s) given (n1) for 2 replicas"},
		{[]string{"n1", "w1"}, codes.InvalidArgument, `node "w1" is not a data node`},
		{[]string{"n1", "n1"}, codes.InvalidArgument, `node "n1" given twice`},
		{[]string{"n1", "n4"}, codes.Unavailable, `node "n4" does not answer`},
		{[]string{"n3", "n1"}, 0, ""},
	} {
		nodes, witness, err := m.Place(ctx, ms, 2*gib, 2, tc.want)
		if tc.code == 0 {
			if err != nil || strings.Join(nodes, ",") != "n3,n1" || witness != "w1" {
				t.Errorf("%v: %v %q %v", tc.want, nodes, witness, err)
			}
			continue
		}
		if !statetest.IsStatus(err, tc.code, tc.msg) {
			t.Errorf("%v: %v; want %s containing %q", tc.want, err, tc.code, tc.msg)
		}
	}
	w, ms = setup()
	w.peers["w1"].free, w.peers["n4"].free = -1, -1
	w.peers["n3"].free = -1
	if _, _, err := w.manager(t).Place(ctx, ms, gib, 2, nil); !statetest.IsStatus(err, codes.FailedPrecondition, "") {
		t.Errorf("no third online node for a witness: %v", err)
	}
}

// TestPlaceSpreadsByCount: on nodes whose free space is the same (sparse
// volume files on alike disks), automatic placement spreads replicas and
// primaries evenly instead of filling the nodes in name order (issue 17:
// one node was the primary of 977 of 1000 volumes).
func TestPlaceSpreadsByCount(t *testing.T) {
	const gib = 1 << 30
	w := newWorld()
	ms := w.meta.fresh
	for _, n := range []string{"n1", "n2", "n3"} {
		w.peers[n].free = 100 * gib
	}
	m := w.manager(t)
	ctx := context.Background()
	replicas, primaries, witnesses := map[string]int{}, map[string]int{}, map[string]int{}
	for i := range 300 {
		count := 2
		if i%3 == 2 {
			count = 3
		}
		nodes, witness, err := m.Place(ctx, ms, gib, count, nil)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("v%03d", i)
		ms.Volumes[name] = &consensus.VolumeEntry{Name: name, Size: gib, Replicas: nodes, Witness: witness}
		primaries[nodes[0]]++
		witnesses[witness]++
		for _, n := range nodes {
			replicas[n]++
		}
	}
	// 200 volumes of 2 and 100 of 3: 700 replicas, 300 primaries.
	for _, n := range []string{"n1", "n2", "n3"} {
		if r, p := replicas[n], primaries[n]; r < 233 || r > 234 || p < 99 || p > 101 {
			t.Errorf("%s holds %d replicas and is primary of %d volumes; want 233-234 and 99-101 (replicas %v, primaries %v)", n, r, p, replicas, primaries)
		}
	}
	// Explicit nodes keep their order: the first named is the primary.
	nodes, _, err := m.Place(ctx, ms, gib, 2, []string{"n3", "n1"})
	if err != nil || !slices.Equal(nodes, []string{"n3", "n1"}) {
		t.Fatalf("named nodes: %v %v", nodes, err)
	}
	t.Logf("witnesses of the 2-replica volumes: %v", witnesses)
}
