package recovery

import (
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// addVolume records a ready volume on replicas, its primary first, and
// what Show answers for it: the primary UpToDate, the others in states.
func (f *fixture) addVolume(name, ha string, replicas []string, states ...tandemv1.ReplicaState) {
	f.meta.mu.Lock()
	defer f.meta.mu.Unlock()
	if f.meta.ms.Volumes == nil {
		f.meta.ms.Volumes = map[string]*consensus.VolumeEntry{}
	}
	f.meta.ms.Volumes[name] = &consensus.VolumeEntry{Name: name, Replicas: replicas, State: consensus.VolumeReady, HA: ha}
	info := &tandemv1.VolumeInfo{Name: name, Primary: replicas[0]}
	for i, n := range replicas {
		st := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
		if i > 0 && i-1 < len(states) {
			st = states[i-1]
		}
		info.Replicas = append(info.Replicas, &tandemv1.VolumeReplica{Node: n, State: st, Primary: i == 0})
	}
	f.vols.mu.Lock()
	defer f.vols.mu.Unlock()
	if f.vols.infos == nil {
		f.vols.infos = map[string]*tandemv1.VolumeInfo{}
	}
	f.vols.infos[name] = info
}

// TestRecoverPromotesVolumesWithoutVM: after the node is fenced, and not
// before, a volume without a VM whose primary it was is promoted on its
// UpToDate replica (HA auto, the default); an HA manual one is left to an
// operator with an event saying how; one with no UpToDate replica left
// fails with the reason; a VM's disk goes with its VM, and a volume whose
// primary lives elsewhere is not touched.
func TestRecoverPromotesVolumesWithoutVM(t *testing.T) {
	f := newFixture(t)
	up, outdated := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE, tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	f.addVolume("auto-vol", "", []string{"n2", "n3"}, up)
	f.addVolume("auto3", consensus.VolumeHAAuto, []string{"n2", "n1", "n3"}, outdated, up)
	f.addVolume("manual-vol", consensus.VolumeHAManual, []string{"n2", "n3"}, up)
	f.addVolume("stale", "", []string{"n2", "n3"}, outdated)
	f.addVolume("elsewhere", "", []string{"n3", "n2"}, up)
	f.addVolume("vm-disk", "", []string{"n2", "n3"}, up)
	f.addVM("vm", "n2", 1, "vm-disk")
	f.dead("n2")
	done := f.runRecover(t.Context(), "n2")
	f.waitFor(t, "event fence-result n2: fencing n2 not confirmed")
	if f.j.Has("promote") {
		t.Fatalf("promoted before the node was fenced:\n%s", strings.Join(f.j.List(), "\n"))
	}
	f.meta.confirmOff("n2")
	wait(t, done)
	got := strings.Join(f.j.List(), "\n")
	// The lookups do not wait for the dead node's answer.
	if !f.j.Has("show auto-vol without n2") {
		t.Errorf("the lookup of auto-vol asked the dead n2:\n%s", got)
	}
	fenced := f.j.Index("event fence-result n2: confirmed")
	for _, want := range []string{"promote auto-vol on n3", "promote auto3 on n3", "promote vm-disk on n3", "start vm on n3"} {
		if i := f.j.Index(want); i < 0 || i < fenced {
			t.Errorf("%q missing or before the fence:\n%s", want, got)
		}
	}
	for _, not := range []string{"promote manual-vol", "promote stale", "promote elsewhere", "promote auto3 on n1"} {
		if f.j.Has(not) {
			t.Errorf("%q:\n%s", not, got)
		}
	}
	for _, want := range []string{
		"event volume-ha-manual n2: volume manual-vol keeps its primary on n2 (HA manual)",
		"event volume-recovery-failed n2: volume stale: no UpToDate replica of stale on a member other than n2",
		"event promotion n3: volume auto-vol promoted on n3 after n2 died",
		"event volumes-recovered n2: 2 of 3 volumes without a VM promoted",
	} {
		if !f.j.Has(want) {
			t.Errorf("no %q:\n%s", want, got)
		}
	}
	if !f.m.volsDone["n2"] {
		t.Error("the volumes of n2 are not marked handled: the next tick would recover them again")
	}
}

// TestNoFenceForReplicasOnly: a dead node that is primary of nothing and
// runs no VM is not fenced; its loss is marked handled.
func TestNoFenceForReplicasOnly(t *testing.T) {
	f := newFixture(t)
	f.addVolume("elsewhere", "", []string{"n3", "n2"}, tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE)
	f.dead("n2")
	wait(t, f.runRecover(t.Context(), "n2"))
	if f.j.Has("event fence") || f.j.Has("promote") {
		t.Fatalf("a node holding only secondaries was fenced:\n%s", strings.Join(f.j.List(), "\n"))
	}
	if !f.m.volsDone["n2"] {
		t.Error("not marked handled")
	}
}

// TestAbandonedFenceSetBackWhenNodeAnswers is the regression test of the
// fault-schedule runner's finding 3 (seed 3004): an earlier leader set a
// VM's HA state to fence and lost the leadership; this leader never finds
// the node dead because it answers. The VM goes back to started once the
// node answered this leader (its crash restart starts only those), and not
// before; a VM in state recovery, whose restart elsewhere may have begun,
// and a node this leader is recovering itself are left alone.
func TestAbandonedFenceSetBackWhenNodeAnswers(t *testing.T) {
	f := newFixture(t)
	f.addVM("a", "n2", 1, "va")
	f.addVM("b", "n2", 1, "vb")
	f.addVM("c", "n3", 1, "vc")
	for vm, st := range map[string]string{"a": consensus.HAFence, "b": consensus.HARecovery, "c": consensus.HAFence} {
		f.meta.ms.VMs[vm].HAState = st
	}
	f.vms.unknown = []string{"n3"} // b: where it runs cannot be told yet
	f.dead("n2")                   // a fresh detector: n2 not heard from
	f.m.mu.Lock()
	f.m.recovering["n3"] = true
	f.m.mu.Unlock()
	f.m.settleAbandoned(t.Context(), f.meta.ms)
	if f.j.Has("ha ") {
		t.Fatalf("set back before the node answered this leader: %v", f.j.List())
	}
	f.m.seen("n2")
	f.m.seen("n3")
	f.answers("n2")
	f.m.settleAbandoned(t.Context(), f.meta.ms)
	got := strings.Join(f.j.List(), "\n")
	if !f.j.Has("ha a started") || !f.j.Has("event recovery-abandoned n2: the recovery of n2 that an earlier metadata leader began stopped") {
		t.Fatalf("a not set back to started once n2 answered:\n%s", got)
	}
	time.Sleep(20 * time.Millisecond) // b's resumption runs in the background
	if f.j.Has("ha b") || f.j.Has("ha c") {
		t.Fatalf("touched a VM in recovery while a member did not answer, or one whose node this leader recovers:\n%s", got)
	}
}

// TestAbandonedFenceOnTheLeadersOwnNode is the regression test of the
// fault-schedule runner's finding of seed 2003: n3, cut off, fenced
// itself and killed its VM; the leader of the time set the VM's HA state
// to fence and lost the leadership; n3 came back and became the leader.
// It never pings itself, so it never counted itself as answering, and the
// VM stayed in fence, down for good. The leader's own node answers it.
func TestAbandonedFenceOnTheLeadersOwnNode(t *testing.T) {
	f := newFixture(t) // n1 leads
	f.addVM("own", "n1", 1, "vo")
	f.meta.ms.VMs["own"].HAState = consensus.HAFence
	f.m.tick(t.Context())
	if !f.j.Has("ha own started") {
		t.Fatalf("a VM left in fence on the leader's own node was not set back to started:\n%s", strings.Join(f.j.List(), "\n"))
	}
}

// TestAbandonedRecoveryFinished: a VM an earlier leader left in HA state
// recovery (its node was fenced, its restart elsewhere may have begun) is
// finished once the node answers this leader, by where its domain runs:
// nowhere, restarted as a recovery would; on one node, recorded there;
// on two, left to an operator (error). Abandoned-recovery variant of
// chaos finding 3.
func TestAbandonedRecoveryFinished(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running []string
		want    []string
		not     []string
	}{
		{"runs nowhere", nil, []string{"promote vb on n3", "start b on n3", "update b n3 if n2", "ha b started", "event vm-recovered n3"}, nil},
		{"runs on the target already", []string{"n3"}, []string{"update b n3 if n2", "ha b started"}, []string{"start b", "promote"}},
		{"runs on its own node", []string{"n2"}, []string{"ha b started"}, []string{"start b", "update b"}},
		{"runs twice", []string{"n2", "n3"}, []string{"ha b error", "event vm-recovery-failed n2"}, []string{"start b", "update b", "ha b started"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.addVM("b", "n2", 1, "vb")
			f.meta.ms.VMs["b"].HAState = consensus.HARecovery
			f.vms.runningOn = map[string][]string{"b": tc.running}
			f.dead("n2")
			f.m.seen("n2")
			f.answers("n2")
			f.m.mu.Lock()
			f.m.leaderTerm = 7 // the fixture's term: this node leads
			f.m.mu.Unlock()
			f.m.settleAbandoned(t.Context(), f.meta.ms)
			f.waitFor(t, tc.want[len(tc.want)-1])
			got := strings.Join(f.j.List(), "\n")
			for _, w := range tc.want {
				if !f.j.Has(w) {
					t.Errorf("no %q:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if f.j.Has(n) {
					t.Errorf("%q:\n%s", n, got)
				}
			}
		})
	}
}

// TestSettleAbandonedSkipsVMOfOwnRecovery is half of the regression test
// of seed 7174: a VM this leader's own recovery of n2 handles was moved
// to live n3 meanwhile, in state recovery. It is not an earlier leader's
// abandoned recovery: settleAbandoned leaves it alone until the recovery
// let go of it, and finishes it after.
func TestSettleAbandonedSkipsVMOfOwnRecovery(t *testing.T) {
	f := newFixture(t)
	f.addVM("b", "n3", 1, "vb")
	f.meta.ms.VMs["b"].HAState = consensus.HARecovery
	f.vms.runningOn = map[string][]string{"b": {"n3"}}
	f.dead("n2")
	f.m.seen("n3")
	f.m.mu.Lock()
	f.m.leaderTerm = 7
	f.m.handling["b"] = "n2"
	f.m.mu.Unlock()
	f.m.settleAbandoned(t.Context(), f.meta.ms)
	time.Sleep(20 * time.Millisecond) // a resumption would run in the background
	if f.j.Has("running-on b") || f.j.Has("ha b") {
		t.Fatalf("settled a VM the running recovery handles:\n%s", strings.Join(f.j.List(), "\n"))
	}
	f.m.mu.Lock()
	delete(f.m.handling, "b")
	f.m.mu.Unlock()
	f.m.settleAbandoned(t.Context(), f.meta.ms)
	f.waitFor(t, "ha b started")
}
