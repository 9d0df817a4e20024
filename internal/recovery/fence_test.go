package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/sealed"
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
	if len(resp.Agents) != 1 || resp.Agents[0] != "ipmi bmc:623 user admin password set (sealed)" || !resp.Lease || strings.Contains(resp.Agents[0], "secret") {
		t.Fatalf("%v", resp)
	}
}

// TestFencePasswordsAreSealed: what is committed holds only the sealed
// password, bound to its node and field; fencing opens it in memory; a
// record from before sealing still works; a node without the cluster
// secret refuses to seal and its agent says why instead of vanishing.
func TestFencePasswordsAreSealed(t *testing.T) {
	f := newFixture(t)
	const pw = "Very-Distinct-BMC-pw"
	_, err := f.m.FenceConfig(t.Context(), &tandemv1.FenceConfigRequest{Name: "n2",
		Ipmi:    &tandemv1.IPMIConfig{Host: "bmc", User: "admin", Password: pw},
		Redfish: &tandemv1.RedfishConfig{Endpoint: "https://bmc", User: "root", Password: pw}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.meta.ms.Nodes["n2"].Fence
	committed, _ := json.Marshal(cfg)
	if strings.Contains(string(committed), pw) || cfg.IPMI.Password != "" || !sealed.IsSealed(cfg.IPMI.PasswordSealed) || !sealed.IsSealed(cfg.Redfish.PasswordSealed) {
		t.Fatalf("committed %s", committed)
	}
	box, err := sealed.New(f.secret, sealed.PurposeFencePassword)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := box.Open(cfg.IPMI.PasswordSealed, "n2", fieldIPMIPassword); err != nil || string(got) != pw {
		t.Fatalf("open: %q %v", got, err)
	}
	if got, err := f.m.openPassword("n2", fieldRedfishPassword, cfg.Redfish.PasswordSealed, ""); err != nil || got != pw {
		t.Fatalf("openPassword: %q %v", got, err)
	}
	tm := ha.DefaultTiming()
	if a := f.m.agents(f.meta.ms.Nodes["n2"], time.Time{}, tm); len(a) != 2 || isUnusable(a[0]) || isUnusable(a[1]) {
		t.Fatalf("agents %v", a)
	}
	// The blob copied to n3's record does not open there: its agent is
	// unusable and says so.
	n3 := f.meta.ms.Nodes["n3"]
	n3.Fence = &consensus.FenceConfig{IPMI: &consensus.IPMIFence{Host: "bmc3", User: "admin", PasswordSealed: cfg.IPMI.PasswordSealed}}
	a := f.m.agents(n3, time.Time{}, tm)
	if len(a) != 1 || !isUnusable(a[0]) {
		t.Fatalf("moved blob: agents %v", a)
	}
	if _, err := fencing.FenceAny(t.Context(), a...); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("moved blob fenced: %v", err)
	}
	// A record from before sealing keeps working, with its marker.
	n3.Fence.IPMI = &consensus.IPMIFence{Host: "bmc3", User: "admin", Password: pw}
	if a := f.m.agents(n3, time.Time{}, tm); len(a) != 1 || isUnusable(a[0]) {
		t.Fatalf("plain record: agents %v", a)
	}
	if agents, _ := fenceAgentsText(n3.Fence); len(agents) != 1 || !strings.Contains(agents[0], "plain text") || strings.Contains(agents[0], pw) {
		t.Fatalf("plain record listed as %q", agents)
	}
	// Without the cluster secret: sealing is refused (nothing proposed),
	// and a sealed agent cannot be used, with the reason.
	f.secret, f.secretErr = nil, errors.New("this node has no cluster secret (copy it)")
	before := *f.meta.ms.Nodes["n2"].Fence
	_, err = f.m.FenceConfig(t.Context(), &tandemv1.FenceConfigRequest{Name: "n2", Ipmi: &tandemv1.IPMIConfig{Host: "bmc", User: "admin", Password: "other"}})
	if !statetest.IsStatus(err, codes.FailedPrecondition, "no cluster secret (copy it)") {
		t.Fatalf("without secret: %v", err)
	}
	if *f.meta.ms.Nodes["n2"].Fence != before {
		t.Fatal("fence config changed without a secret")
	}
	a = f.m.agents(f.meta.ms.Nodes["n2"], time.Time{}, tm)
	if len(a) != 2 || !isUnusable(a[0]) {
		t.Fatalf("agents without secret: %v", a)
	}
	if _, err := a[0].Fence(t.Context()); err == nil || !strings.Contains(err.Error(), "no cluster secret") {
		t.Fatalf("agent without secret: %v", err)
	}
}

func isUnusable(a fencing.Fencer) bool {
	_, ok := a.(unusableAgent)
	return ok
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
