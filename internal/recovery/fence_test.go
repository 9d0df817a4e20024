package recovery

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestFenceConfigChecksAndListsAgentsWithoutSecrets(t *testing.T) {
	f := newFixture(t)
	for _, req := range []*tandemv1.FenceConfigRequest{
		{Name: "n2", Ipmi: &tandemv1.IPMIConfig{User: "u", Password: "p"}},
		{Name: "n2", Ipmi: &tandemv1.IPMIConfig{Host: "bmc", User: "u"}},
		{Name: "n2", Ipmi: &tandemv1.IPMIConfig{Host: "bmc", User: "u", Password: "p", Port: 70000}},
		{Name: "n2", Redfish: &tandemv1.RedfishConfig{Endpoint: "https://bmc", User: "u"}},
	} {
		if _, err := f.m.FenceConfig(t.Context(), req); !statetest.IsStatus(err, codes.InvalidArgument, "") {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
	resp, err := f.m.FenceConfig(t.Context(), &tandemv1.FenceConfigRequest{Name: "n2", Ipmi: &tandemv1.IPMIConfig{Host: "bmc", User: "admin", Password: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Agents) != 1 || resp.Agents[0] != "ipmi bmc:623 user admin" || !resp.Lease || strings.Contains(resp.Agents[0], "secret") {
		t.Fatalf("%v", resp)
	}
}

func TestFence(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.Fence(t.Context(), &tandemv1.FenceNodeRequest{Name: "n1"}); !statetest.IsStatus(err, codes.FailedPrecondition, "") {
		t.Errorf("fencing itself: %v", err)
	}
	if _, err := f.m.Fence(t.Context(), &tandemv1.FenceNodeRequest{Name: "n9"}); !statetest.IsStatus(err, codes.NotFound, "") {
		t.Errorf("unknown node: %v", err)
	}
	// n2 has no agent: nothing can confirm it.
	if _, err := f.m.Fence(t.Context(), &tandemv1.FenceNodeRequest{Name: "n2"}); !statetest.IsStatus(err, codes.Unavailable, "") {
		t.Errorf("no agent: %v", err)
	}
	resp, err := f.m.Fence(t.Context(), &tandemv1.FenceNodeRequest{Name: "n2", ConfirmOff: true})
	if err != nil || !resp.Confirmed || resp.Agent != "operator" {
		t.Fatalf("confirm off: %v %v", resp, err)
	}
	ms, _ := f.meta.LocalState()
	if ms.Nodes["n2"].ConfirmedOffAt.IsZero() || !f.j.Has("event fence-result n2: an operator confirmed") {
		t.Fatalf("confirmation not recorded: %v", f.j.List())
	}
	quorate := false
	f.st.Quorum = statetest.Quorum(&quorate)
	if _, err := f.m.Fence(t.Context(), &tandemv1.FenceNodeRequest{Name: "n3", ConfirmOff: true}); !statetest.IsStatus(err, codes.FailedPrecondition, "") {
		t.Errorf("without quorum: %v", err)
	}
	if ms, _ := f.meta.LocalState(); !ms.Nodes["n3"].ConfirmedOffAt.IsZero() {
		t.Error("changed without quorum")
	}
}

func TestArmAndEvents(t *testing.T) {
	f := newFixture(t)
	resp, err := f.m.Arm(t.Context(), false)
	if err != nil || resp.Armed || f.meta.ms.Config[ha.KeyArmed] != "false" || !f.j.Has("event ha-disarmed") {
		t.Fatalf("disarm: %v %v %v", resp, err, f.j.List())
	}
	for i := range 30 {
		f.meta.ms.Events = append(f.meta.ms.Events, consensus.Event{Seq: uint64(i + 1), Kind: "k"})
	}
	var got []uint64
	send := func(e *tandemv1.Event) error { got = append(got, e.Seq); return nil }
	if err := f.m.Events(t.Context(), &tandemv1.EventsRequest{Tail: 3}, send); err != nil || len(got) != 3 || got[0] != 28 {
		t.Fatalf("tail 3: %v %v", got, err)
	}
	got = nil
	if err := f.m.Events(t.Context(), &tandemv1.EventsRequest{}, send); err != nil || len(got) != 20 || got[0] != 11 {
		t.Fatalf("default tail: %v %v", got, err)
	}
	got = nil
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.m.Events(ctx, &tandemv1.EventsRequest{Since: 29, Follow: true}, send); err != nil || len(got) != 1 || got[0] != 30 {
		t.Fatalf("follow since 29, cancelled: %v %v", got, err)
	}
}
