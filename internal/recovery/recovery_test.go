package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runRecover runs one recovery of dead as the leader at term 7 and returns
// a channel closed when it ends.
func (f *fixture) runRecover(ctx context.Context, dead string) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.m.recover(ctx, dead, 7)
	}()
	return done
}

func wait(t *testing.T, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("recovery did not end")
	}
}

// Recovery waits until the dead node is positively fenced, then for each
// of its VMs in priority order promotes its volumes on the target, starts
// it there and only then records the move.
func TestRecoverFencesThenPromotesThenRestarts(t *testing.T) {
	f := newFixture(t)
	f.addVM("low", "n2", 1, "low-disk")
	f.addVM("high", "n2", 5, "high-disk", "shared")
	f.addVM("elsewhere", "n3", 9, "other")
	f.vms.primary["shared"] = "n3" // already primary on the target
	f.dead("n2")
	done := f.runRecover(t.Context(), "n2")

	// No agent can confirm: the VMs wait, marked fence, nothing promoted.
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	time.Sleep(20 * time.Millisecond) // several more fencing rounds
	for _, e := range []string{"promote", "start", "update"} {
		if f.j.Has(e) {
			t.Fatalf("%s before the node was fenced:\n%s", e, strings.Join(f.j.List(), "\n"))
		}
	}
	if !f.j.Has("ha high fence") || !f.j.Has("ha low fence") || f.j.Has("ha elsewhere") {
		t.Fatalf("HA states while fencing:\n%s", strings.Join(f.j.List(), "\n"))
	}

	f.meta.confirmOff("n2")
	wait(t, done)
	// Both VMs' disks are promoted (in parallel, in any order) before the
	// first VM starts; then the VMs restart one at a time by priority.
	got := f.j.List()
	i := f.j.Index("confirm-off n2")
	head := []string{"confirm-off n2", "event fence-result n2: confirmed by operator"}
	ahead := []string{"event promotion n3", "event promotion n3", "promote high-disk on n3", "promote low-disk on n3"}
	want := []string{
		"ha high recovery",
		"start high on n3",
		"update high n3 if n2",
		"ha high started",
		"event vm-recovered n3",
		"ha low recovery",
		"start low on n3",
		"update low n3 if n2",
		"ha low started",
		"event vm-recovered n3",
		"event vms-recovered n2: 2 of 2 VMs restarted elsewhere",
	}
	fail := func(why string) {
		t.Helper()
		t.Fatalf("%s; after the fence:\n%s", why, strings.Join(got[i:], "\n"))
	}
	if len(got[i:]) != len(head)+len(ahead)+len(want) {
		fail(fmt.Sprintf("%d entries, want %d", len(got[i:]), len(head)+len(ahead)+len(want)))
	}
	for k, w := range head {
		if !strings.HasPrefix(got[i+k], w) {
			fail(fmt.Sprintf("step %d is %q, want %q", k, got[i+k], w))
		}
	}
	var promoted []string
	for _, e := range got[i+len(head) : i+len(head)+len(ahead)] {
		if strings.HasPrefix(e, "event promotion n3:") {
			e = "event promotion n3"
		}
		promoted = append(promoted, e)
	}
	slices.Sort(promoted)
	if !slices.Equal(promoted, ahead) {
		fail(fmt.Sprintf("the promotions before the first start are %q, want %q", promoted, ahead))
	}
	for k, w := range want {
		if e := got[i+len(head)+len(ahead)+k]; !strings.HasPrefix(e, w) {
			fail(fmt.Sprintf("step %d is %q, want %q", len(head)+len(ahead)+k, e, w))
		}
	}
	if f.j.Has("promote shared") {
		t.Fatal("promoted a volume already primary on the target")
	}
}

// A node that answers again before it is fenced keeps its VMs: recovery
// is cancelled and nothing is promoted or started.
func TestRecoverCancelledWhenNodeAnswersBeforeFence(t *testing.T) {
	f := newFixture(t)
	f.addVM("vm", "n2", 1, "disk")
	f.dead("n2")
	done := f.runRecover(t.Context(), "n2")
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	f.answers("n2")
	wait(t, done)
	if !f.j.Has("event recovery-cancelled n2") || !f.j.Has("ha vm started") {
		t.Fatalf("not cancelled:\n%s", strings.Join(f.j.List(), "\n"))
	}
	for _, e := range []string{"promote", "start", "update"} {
		if f.j.Has(e) {
			t.Fatalf("%s after the node answered:\n%s", e, strings.Join(f.j.List(), "\n"))
		}
	}
}

// A leader that loses its leadership stops recovering: the next leader
// starts over from the committed HA states.
func TestRecoverStopsWhenLeadershipMoves(t *testing.T) {
	f := newFixture(t)
	f.addVM("vm", "n2", 1, "disk")
	f.dead("n2")
	done := f.runRecover(t.Context(), "n2")
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	f.meta.setLeader(3, 8)
	wait(t, done) // ends while still waiting for the fence
	if f.j.Has("promote") || f.j.Has("start") || f.j.Has("ha vm recovery") {
		t.Fatalf("recovered without leading:\n%s", strings.Join(f.j.List(), "\n"))
	}
}

// Cancelling the leader's context ends a recovery waiting for fencing at
// once, even with a long heartbeat interval.
func TestRecoverHonoursContext(t *testing.T) {
	f := newFixture(t)
	f.addVM("vm", "n2", 1, "disk")
	f.dead("n2")
	f.m.timing.HeartbeatInterval = time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	done := f.runRecover(ctx, "n2")
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	cancel()
	wait(t, done)
}

// selfFence sets the flag first, then freezes every primary and destroys
// every VM here; a second call does nothing.
func TestSelfFenceFreezesVolumesAndDestroysVMs(t *testing.T) {
	f := newFixture(t)
	f.vols.primaries = 2
	f.libvirtd(t, "a", "b")
	f.m.selfFence(t.Context())
	if !f.st.Fence.Fenced() {
		t.Fatal("not fenced")
	}
	if !errors.Is(f.vols.frozen, ErrSelfFenced) {
		t.Fatalf("volumes frozen with %v", f.vols.frozen)
	}
	if got := strings.Join(f.j.List(), ","); got != "freeze-all,destroy a,destroy b" {
		t.Fatalf("journal %s", got)
	}
	if r, _ := f.vms.domains.Running(t.Context()); len(r) != 0 {
		t.Fatalf("still running: %v", r)
	}
	f.m.selfFence(t.Context())
	if n := len(f.j.List()); n != 3 {
		t.Fatalf("fenced twice: %v", f.j.List())
	}
}

// A node whose lease ran out while it runs nothing (a node still joining)
// does not fence itself, so its watchdog keeps petting; one that may run
// something (a primary, a domain, or libvirtd there but not answering)
// does.
func TestLeaseExpiryFencesOnlyWithSomethingToStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, f *fixture)
		fenced bool
	}{
		{"compute off", func(t *testing.T, f *fixture) { f.st.Config.Compute.LibvirtSocket = config.ComputeOff }, false},
		{"no libvirtd socket", func(*testing.T, *fixture) {}, false},
		{"libvirtd with no domain", func(t *testing.T, f *fixture) { f.libvirtd(t) }, false},
		{"libvirtd not answering", func(t *testing.T, f *fixture) {
			f.libvirtd(t)
			f.vms.domains = nil
		}, true},
		{"a domain running", func(t *testing.T, f *fixture) { f.libvirtd(t, "vm") }, true},
		{"a primary, compute off", func(t *testing.T, f *fixture) {
			f.st.Config.Compute.LibvirtSocket = config.ComputeOff
			f.vols.primaries = 1
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(t, f)
			f.m.lease = ha.NewLease(f.m.timing, time.Now().Add(-time.Minute)) // long expired
			f.m.selfFence(t.Context())
			if f.st.Fence.Fenced() != tc.fenced {
				t.Fatalf("fenced = %v, want %v", f.st.Fence.Fenced(), tc.fenced)
			}
			if f.j.Has("freeze-all") != tc.fenced {
				t.Fatalf("journal %v", f.j.List())
			}
			f.m.mu.Lock()
			idle := !f.m.idleUntil.IsZero()
			f.m.mu.Unlock()
			if idle == tc.fenced {
				t.Fatalf("idle recheck set = %v", idle)
			}
		})
	}
}

// A fenced node serves again once it proves quorum; without quorum it
// stays fenced.
func TestSelfFenceLiftedWhenQuorumReturns(t *testing.T) {
	f := newFixture(t) // n1 leads: a quorum check alone renews its lease
	f.vols.primaries = 1
	f.m.lease = ha.NewLease(f.m.timing, time.Now().Add(-time.Minute))
	f.meta.quorumErr = errors.New("no quorum")
	f.m.tick(t.Context())
	if !f.st.Fence.Fenced() {
		t.Fatal("an expired lease without quorum did not fence")
	}
	f.m.tick(t.Context())
	if !f.st.Fence.Fenced() || f.j.Has("event self-fence-lifted") {
		t.Fatal("lifted without quorum")
	}
	f.meta.mu.Lock()
	f.meta.quorumErr = nil
	f.meta.mu.Unlock()
	f.m.tick(t.Context())
	if f.st.Fence.Fenced() || !f.j.Has("event self-fence-lifted n1") {
		t.Fatalf("not lifted with quorum back: %v", f.j.List())
	}
}

// Only a ping from the node the metadata names as leader, at its term,
// renews the lease.
func TestLeaderPingRenewsOnlyFromTheLeader(t *testing.T) {
	f := newFixture(t)
	f.meta.setLeader(3, 8)
	f.m.timing.HeartbeatInterval = time.Minute
	old := time.Now().Add(-time.Minute)
	f.m.lease = ha.NewLease(f.m.timing, old)
	f.m.lease.QuorumOK(time.Now(), false)   // this node just proved quorum
	f.m.LeaderPing("n2", 8, []string{"n2"}) // not the leader
	f.m.LeaderPing("n3", 7, []string{"n2"}) // stale term
	if !f.m.lease.Renewed().Equal(old) {
		t.Fatal("renewed by a non-leader")
	}
	f.m.LeaderPing("n3", 8, nil)
	if !f.m.lease.Renewed().After(old) {
		t.Fatal("not renewed by the leader")
	}
	if f.j.Has("wake-shards") {
		t.Fatalf("shards woken on a ping that was not the leader's: %v", f.j.List())
	}
}

// A leader ping that finds no quorum proof recent enough starts an HA
// round at once, and the check it makes renews the lease as of the ping.
func TestLeaderPingWithoutRecentQuorumKicksACheck(t *testing.T) {
	f := newFixture(t)
	f.meta.setLeader(3, 8)
	f.m.timing.HeartbeatInterval = 200 * time.Millisecond
	old := time.Now().Add(-time.Minute)
	f.m.lease = ha.NewLease(f.m.timing, old)
	f.m.lease.QuorumOK(old, false)
	before := time.Now()
	f.m.LeaderPing("n3", 8, nil)
	if !f.m.lease.Renewed().Equal(old) {
		t.Fatal("renewed on a proof a minute old")
	}
	select {
	case <-f.m.kick:
	default:
		t.Fatal("no HA round kicked")
	}
	f.m.tick(t.Context())
	if r := f.m.lease.Renewed(); r.Before(before) || r.After(time.Now()) {
		t.Fatalf("after the kicked check the lease was renewed at %v, want as of the ping (after %v)", r, before)
	}
}

// The leader's pings name the nodes it suspects; each receiver wakes its
// volume shards of such a node once while it stays unreachable, and again
// after it came back and was lost anew. The leader wakes its own as its
// detector suspects them.
func TestUnreachableNodesShardsWoken(t *testing.T) {
	f := newFixture(t)
	f.meta.setLeader(3, 8)
	f.m.LeaderPing("n3", 8, []string{"n2"})
	f.waitFor(t, "wake-shards n2")
	f.m.LeaderPing("n3", 8, []string{"n2"})
	f.m.LeaderPing("n3", 8, []string{"n2", "n1"}) // this node itself: nothing to wake
	time.Sleep(20 * time.Millisecond)
	if n := f.j.Count("wake-shards"); n != 1 {
		t.Fatalf("woken %d times while n2 stayed unreachable: %v", n, f.j.List())
	}
	f.m.LeaderPing("n3", 8, nil) // n2 answers again
	f.m.LeaderPing("n3", 8, []string{"n2"})
	deadline := time.Now().Add(5 * time.Second)
	for f.j.Count("wake-shards n2") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("not woken again after n2 came back and was lost anew: %v", f.j.List())
		}
		time.Sleep(time.Millisecond)
	}
}

// hasStartedVMs decides whether a dead node needs a recovery at all.
func TestHasStartedVMs(t *testing.T) {
	ms := &consensus.MetaState{VMs: map[string]*consensus.VMRecord{
		"a": {Name: "a", Node: "n2", Desired: consensus.VMStopped},
		"b": {Name: "b", Node: "n2", Desired: consensus.VMStarted, HAState: consensus.HAError},
		"c": {Name: "c", Node: "n3", Desired: consensus.VMStarted},
	}}
	if hasStartedVMs(ms, "n2") || !hasStartedVMs(ms, "n3") {
		t.Fatal("hasStartedVMs")
	}
}

// The HA loop's rounds are the daemon's liveness (systemd's watchdog
// follows LastTick): it advances while the loop runs, and not before.
func TestLastTickAdvances(t *testing.T) {
	f := newFixture(t)
	if !f.m.LastTick().IsZero() {
		t.Fatal("a tick before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	first := time.Time{}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if lt := f.m.LastTick(); first.IsZero() && !lt.IsZero() {
			first = lt
		} else if !first.IsZero() && lt.After(first) {
			return
		}
	}
	t.Fatalf("LastTick did not advance twice: first %v, now %v", first, f.m.LastTick())
}

// An operator's confirmation that a node is off counts only for the loss
// after which it was committed. Here it predates the node's last answer
// (it came back, then was lost again), and the proposer's clock ran an
// hour ahead of the leader's: recovery still waits, and a confirmation
// committed after the last answer lets it proceed. Once the node answers
// again, the leader clears the confirmation.
func TestStaleConfirmOffDoesNotFence(t *testing.T) {
	f := newFixture(t)
	f.addVM("vm", "n2", 1, "disk")
	f.meta.confirmOff("n2")
	f.meta.mu.Lock()
	f.meta.ms.Nodes["n2"].ConfirmedOffAt = time.Now().Add(time.Hour) // a clock ahead
	f.meta.mu.Unlock()
	f.dead("n2")
	f.m.seen("n2") // it came back after the confirmation...
	f.dead("n2")   // ...and was lost again
	done := f.runRecover(t.Context(), "n2")
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	time.Sleep(20 * time.Millisecond) // several more fencing rounds
	if f.j.Has("promote") || f.j.Has("start") {
		t.Fatalf("recovered on a confirmation older than the node's last answer:\n%s", strings.Join(f.j.List(), "\n"))
	}
	f.meta.confirmOff("n2")
	wait(t, done)
	if !f.j.Has("event fence-result n2: confirmed by operator") || !f.j.Has("start vm on n3") {
		t.Fatalf("a fresh confirmation did not let recovery proceed:\n%s", strings.Join(f.j.List(), "\n"))
	}

	f.m.seen("n2") // back again
	ms, _ := f.meta.LocalState()
	f.m.forgetConfirmations(t.Context(), ms, []string{"n1", "n2", "n3"})
	if ms, _ := f.meta.LocalState(); ms.Nodes["n2"].ConfirmedOffIndex != 0 || !ms.Nodes["n2"].ConfirmedOffAt.IsZero() {
		t.Fatalf("confirmation kept after the node answered: %+v", ms.Nodes["n2"])
	}
	if !f.j.Has("clear-confirm-off n2") {
		t.Fatal("no clear proposed")
	}
}

// With libvirtd hung (it never answers), a self-fence still kills this
// host's QEMUs at once, without it: the cluster restarts the VMs once the
// lease and its grace ran out, whatever libvirtd does.
func TestSelfFenceKillsQEMUWithoutLibvirtd(t *testing.T) {
	f := newFixture(t)
	f.vols.primaries = 1
	hung := make(chan struct{})
	f.vms.hang = hung
	if err := os.WriteFile(f.st.Config.Compute.LibvirtSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.m.killQEMU = func(context.Context) ([]string, error) {
		f.j.Add("kill-qemu")
		return []string{"a"}, nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.m.selfFence(t.Context())
	}()
	defer func() { close(hung); <-done }()
	f.waitFor(t, "kill-qemu")
	if got := strings.Join(f.j.List(), ","); got != "freeze-all,kill-qemu" {
		t.Fatalf("journal %s", got)
	}
	if !f.st.Fence.Fenced() {
		t.Fatal("not fenced")
	}
}

// A node told it was removed stops for good in the self-fence's order
// (volumes frozen, then VMs destroyed), remembers who removed it, does it
// once, and never lifts the fence when a quorum check passes again.
func TestRemovedStopsForGood(t *testing.T) {
	f := newFixture(t)
	f.vols.primaries = 1
	f.libvirtd(t, "a")
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	first, frozen, destroyed := f.m.Removed(t.Context(), state.RemovalRecord{ClusterName: "acme", By: "n2", As: "bootstrap", At: at, ToldBy: "n2"})
	if !first || frozen != 1 || destroyed != 1 || !f.st.Fence.Fenced() {
		t.Fatalf("first=%v frozen=%d destroyed=%d fenced=%v", first, frozen, destroyed, f.st.Fence.Fenced())
	}
	if !errors.Is(f.vols.frozen, ErrRemoved) {
		t.Fatalf("volumes frozen with %v", f.vols.frozen)
	}
	if got := strings.Join(f.j.List(), ","); got != "freeze-all,destroy a" {
		t.Fatalf("journal %s", got)
	}
	if r, ok := f.st.Removal.Get(); !ok || r.By != "n2" || r.As != "bootstrap" || !r.At.Equal(at) || r.ClusterName != "acme" {
		t.Fatalf("removal recorded as %+v, %v", r, ok)
	}
	if again, _, _ := f.m.Removed(t.Context(), state.RemovalRecord{By: "n3"}); again {
		t.Fatal("a second notice acted again")
	}
	if r, _ := f.st.Removal.Get(); r.By != "n2" {
		t.Fatalf("a second notice replaced the first: %+v", r)
	}
	f.m.tick(t.Context()) // quorum checks pass in the fixture
	if !f.st.Fence.Fenced() || f.j.Has("event self-fence-lifted") {
		t.Fatalf("a removed node's fence was lifted: %v", f.j.List())
	}
}

// A removed node that runs nothing is flagged (nothing may start) but not
// fenced, so its watchdog keeps petting, as selfFence leaves such a node.
func TestRemovedWithNothingRunning(t *testing.T) {
	f := newFixture(t)
	f.libvirtd(t)
	first, frozen, destroyed := f.m.Removed(t.Context(), state.RemovalRecord{By: "n2"})
	if !first || frozen != 0 || destroyed != 0 || !f.st.Fence.Fenced() {
		t.Fatalf("first=%v frozen=%d destroyed=%d flagged=%v", first, frozen, destroyed, f.st.Fence.Fenced())
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.m.selfFenced || len(f.j.List()) != 0 {
		t.Fatalf("fenced a node running nothing: %v", f.j.List())
	}
}

// TestRecoverVMMovedMeanwhileIsNotAnError is the regression test of seed
// 7174: while the leader recovered dead n2, another path moved its VM to
// n1 and restarted it there (state started). The recovery's next attempt
// found it moved; it used to count that as a failure and, after three,
// wrote state error over started, so the VM's crash restart skipped it
// for good. A VM that moved is no longer this recovery's: it is left as
// it is, with no error and no failure event, and let go at once.
func TestRecoverVMMovedMeanwhileIsNotAnError(t *testing.T) {
	f := newFixture(t)
	f.addVM("web", "n2", 1, "web-disk")
	f.dead("n2")
	var once sync.Once
	f.vms.onPlace = func(vm string) {
		if vm != "web" || !f.j.Has("ha web recovery") {
			return
		}
		once.Do(func() {
			f.j.Add("moved web to n1")
			f.meta.mu.Lock()
			defer f.meta.mu.Unlock()
			v := f.meta.ms.VMs["web"]
			v.Node, v.HAState = "n1", consensus.HAStarted
		})
	}
	f.meta.confirmOff("n2")
	wait(t, f.runRecover(t.Context(), "n2"))
	got := strings.Join(f.j.List(), "\n")
	if !f.j.Has("moved web to n1") {
		t.Fatalf("the VM was never moved:\n%s", got)
	}
	if f.j.Has("ha web error") || f.j.Has("event vm-recovery-failed") || f.j.Has("start web") {
		t.Fatalf("a VM that moved meanwhile counted as a failed recovery:\n%s", got)
	}
	f.requireLetGo(t, "n1")
}

// requireLetGo fails unless VM web ended on node in HA state started and
// the recovery let go of every VM it handled.
func (f *fixture) requireLetGo(t *testing.T, node string) {
	t.Helper()
	got := strings.Join(f.j.List(), "\n")
	f.meta.mu.Lock()
	v := *f.meta.ms.VMs["web"]
	f.meta.mu.Unlock()
	if v.Node != node || v.HAState != consensus.HAStarted {
		t.Fatalf("VM on %s in HA state %q, want %s in started:\n%s", v.Node, v.HAState, node, got)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if len(f.m.handling) != 0 {
		t.Fatalf("the recovery still holds %v", f.m.handling)
	}
}

// TestRecoverHandsVMBackWhenItsNodeAnswersAgain is the regression test of
// seed 7223: n2 held the only UpToDate replica of its VM's disk, so no
// node could run the VM while n2 was away (Place fails); n2 answered again
// during the restart attempts, and the recovery still wrote HA state error,
// which every restart path skips: the VM stayed down. Nothing of the VM
// moved, so it goes back to its node (state started), whose crash restart
// starts it, whether the node answers between two attempts or during the
// last one.
func TestRecoverHandsVMBackWhenItsNodeAnswersAgain(t *testing.T) {
	for _, backAt := range []int{1, 3} {
		t.Run(fmt.Sprintf("back during attempt %d", backAt), func(t *testing.T) {
			f := newFixture(t)
			f.addVM("web", "n2", 1, "web-disk")
			f.dead("n2")
			// No node can run it, in the plan ahead of the attempts and
			// in each attempt; n2 answers during attempt backAt.
			f.vms.placeErr = func(vm string) error {
				if f.j.Count("ha web recovery") == backAt {
					f.answers("n2")
				}
				return status.Errorf(codes.FailedPrecondition, "no node can run %s safely: n1: its replica of volume web-disk is Outdated", vm)
			}
			f.meta.confirmOff("n2")
			wait(t, f.runRecover(t.Context(), "n2"))
			got := strings.Join(f.j.List(), "\n")
			if f.j.Has("ha web error") || f.j.Has("event vm-recovery-failed") {
				t.Fatalf("a VM whose node answered again, restarted nowhere else, went to error:\n%s", got)
			}
			for _, e := range []string{"promote", "start web", "update web"} {
				if f.j.Has(e) {
					t.Fatalf("%s:\n%s", e, got)
				}
			}
			if !f.j.Has("event recovery-cancelled n2") || f.j.Count("ha web recovery") != backAt {
				t.Fatalf("no hand-back right after n2 answered:\n%s", got)
			}
			f.requireLetGo(t, "n2")
		})
	}
}

// A VM the recovery placed elsewhere is not handed back when its node
// answers again: its disks may have moved, and a start may have begun. A
// restart that keeps failing still ends in HA state error, for an operator.
func TestRecoverKeepsVMPlacedElsewhere(t *testing.T) {
	f := newFixture(t)
	f.addVM("web", "n2", 1, "web-disk")
	f.dead("n2")
	f.vms.startErr = errors.New("qemu: cannot start")
	f.vms.onPlace = func(string) {
		if f.j.Count("ha web recovery") == 1 {
			f.answers("n2")
		}
	}
	f.meta.confirmOff("n2")
	wait(t, f.runRecover(t.Context(), "n2"))
	got := strings.Join(f.j.List(), "\n")
	if !f.j.Has("promote web-disk on n3") || !f.j.Has("ha web error") || f.j.Has("event recovery-cancelled") {
		t.Fatalf("a VM placed on n3 was handed back, or its failed restart did not end in error:\n%s", got)
	}
}
