package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemhci/tandem/replication"
)

func volApply(t *testing.T, m *volumeSM, c VolumeCommand) error {
	t.Helper()
	c.At = time.Now()
	return m.apply(&c)
}

func newVolSM(t *testing.T) *volumeSM {
	t.Helper()
	m := NewVolumeStateMachine(0, 0).(*volumeSM)
	init := &VolumeRecord{Name: "vol1", ShardID: 1001, Size: 1 << 30, Primary: "a", Replicas: map[string]*ReplicaRecord{
		"a": {State: UpToDate}, "b": {State: UpToDate}, "c": {State: UpToDate},
	}}
	if err := volApply(t, m, VolumeCommand{Op: volInit, By: "a", Init: init}); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVolumeEpochGuardsAndPromotion(t *testing.T) {
	m := newVolSM(t)
	if m.r.Epoch != 1 || m.r.Primary != "a" {
		t.Fatalf("init: epoch %d primary %s", m.r.Epoch, m.r.Primary)
	}
	// I1/I2: only the current primary at the current epoch may fence a peer.
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "b", Epoch: 1, Peer: "c"}); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("outdate by a secondary: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "a", Epoch: 0, Peer: "c"}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("outdate with a stale epoch: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "a", Epoch: 1, Peer: "c"}); err != nil {
		t.Fatal(err)
	}
	if m.r.Replicas["c"].State != Outdated {
		t.Fatalf("c is %s", m.r.Replicas["c"].State)
	}
	// I3: an Outdated replica cannot be promoted; an UpToDate one can.
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "c"}); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("promote Outdated: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "b", Epoch: 7}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("promote with a wrong expected epoch: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "b", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if m.r.Epoch != 2 || m.r.Primary != "b" || m.r.Replicas["a"].State != Outdated {
		t.Fatalf("after promote: epoch %d primary %s a=%s", m.r.Epoch, m.r.Primary, m.r.Replicas["a"].State)
	}
	// The deposed primary's commands are refused from now on.
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "a", Epoch: 1, Peer: "b"}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale primary fencing the new one: %v", err)
	}
	// Resync transitions, driven by the new primary.
	if err := volApply(t, m, VolumeCommand{Op: volSetState, By: "b", Epoch: 2, Peer: "a", State: UpToDate}); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("Outdated -> UpToDate without resync: %v", err)
	}
	for _, s := range []ReplicaState{SyncTarget, UpToDate} {
		if err := volApply(t, m, VolumeCommand{Op: volSetState, By: "b", Epoch: 2, Peer: "a", State: s}); err != nil {
			t.Fatalf("-> %s: %v", s, err)
		}
	}
	// A resync interrupted by a fence leaves the target Inconsistent.
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "b", Epoch: 2, Peer: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volSetState, By: "b", Epoch: 2, Peer: "c", State: SyncTarget}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "b", Epoch: 2, Peer: "c"}); err != nil {
		t.Fatal(err)
	}
	if m.r.Replicas["c"].State != Inconsistent {
		t.Fatalf("interrupted SyncTarget is %s, want Inconsistent", m.r.Replicas["c"].State)
	}
	if len(m.r.History) == 0 {
		t.Fatal("no history recorded")
	}
}

// witnessVolume starts volume "v" on shard: data replicas on hosts 1 and
// 2 (n1 primary), the witness joined on host 3, as tandemd creates one.
func witnessVolume(t *testing.T, ctx context.Context, hosts []*testHost, shard uint64) ([]*Volumes, *VolumeRecord) {
	t.Helper()
	members := map[uint64]string{1: hosts[0].addr, 2: hosts[1].addr}
	vols := make([]*Volumes, 3)
	for i, th := range hosts {
		vols[i] = NewVolumes(th.h, th.name)
	}
	for i := range 2 {
		if err := vols[i].Start(ShardSpec{ShardID: shard, ReplicaID: uint64(i + 1), Members: members}); err != nil {
			t.Fatal(err)
		}
	}
	if err := hosts[0].h.AddReplica(ctx, shard, 3, hosts[2].addr, Witness); err != nil {
		t.Fatal(err)
	}
	if err := vols[2].Start(ShardSpec{ShardID: shard, ReplicaID: 3, Join: true, Role: Witness}); err != nil {
		t.Fatal(err)
	}
	rec, err := vols[0].Init(ctx, VolumeRecord{Name: "v", ShardID: shard, Size: 1 << 20, Primary: "n1", Witness: "n3",
		Replicas: map[string]*ReplicaRecord{"n1": {State: UpToDate}, "n2": {State: UpToDate}}})
	if err != nil {
		t.Fatal(err)
	}
	return vols, rec
}

func TestVolumeShardWithWitness(t *testing.T) {
	hosts := newCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	const shard = 2001
	vols, rec := witnessVolume(t, ctx, hosts, shard)
	var err error
	// The primary loses n2 and fences it through the shard (n1 + witness).
	if err := hosts[1].h.StopShard(shard); err != nil {
		t.Fatal(err)
	}
	rec, err = vols[0].Outdate(ctx, shard, rec.Epoch, "n2", "peer unreachable")
	if err != nil {
		t.Fatalf("outdate with data replica + witness: %v", err)
	}
	if rec.Replicas["n2"].State != Outdated {
		t.Fatalf("n2 is %s", rec.Replicas["n2"].State)
	}
	got, err := vols[0].Record(ctx, shard)
	if err != nil || got.Replicas["n2"].State != Outdated || got.Epoch != 1 {
		t.Fatalf("record: %+v %v", got, err)
	}
	if _, err := vols[0].Promote(ctx, shard, "n2", 0, "operator"); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("promoting the Outdated replica: %v", err)
	}
}

func TestVolumeMigrationWindow(t *testing.T) {
	m := newVolSM(t)
	// I5 step 1: the target must be UpToDate; only the primary opens the window.
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "b", Epoch: 1, Peer: "c"}); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("allow-dual by a secondary: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volHandover, By: "a", Epoch: 1, Peer: "b"}); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("handover without an open window: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "a", Epoch: 1, Peer: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "a", Epoch: 1, Peer: "c"}); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("allow-dual to an Outdated replica: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "a", Epoch: 1, Peer: "b"}); err != nil {
		t.Fatal(err)
	}
	// Exactly two nodes: a second window is refused while one is open.
	m.r.Replicas["c"].State = UpToDate
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "a", Epoch: 1, Peer: "c"}); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("second window: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volEndDual, By: "a", Epoch: 1}); err != nil || m.r.MigrationTarget != "" {
		t.Fatalf("end-dual: %v, target %q", err, m.r.MigrationTarget)
	}
	if err := volApply(t, m, VolumeCommand{Op: volHandover, By: "a", Epoch: 1, Peer: "b"}); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("handover after the window closed: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "a", Epoch: 1, Peer: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volHandover, By: "a", Epoch: 1, Peer: "b"}); err != nil {
		t.Fatal(err)
	}
	// I5 steps 4-5: a new epoch, the old primary an UpToDate secondary.
	if m.r.Epoch != 2 || m.r.Primary != "b" || m.r.MigrationTarget != "" || m.r.Replicas["a"].State != UpToDate || m.r.Replicas["a"].Reconcile {
		t.Fatalf("after handover: %+v a=%+v", m.r, m.r.Replicas["a"])
	}
	// A retried handover from the old primary is refused by the epoch guard.
	if err := volApply(t, m, VolumeCommand{Op: volHandover, By: "a", Epoch: 1, Peer: "b"}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("retried handover: %v", err)
	}
	// A promotion closes an open window.
	if err := volApply(t, m, VolumeCommand{Op: volAllowDual, By: "b", Epoch: 2, Peer: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "c", Epoch: 2}); err != nil || m.r.MigrationTarget != "" {
		t.Fatalf("promote during a window: %v, target %q", err, m.r.MigrationTarget)
	}
}

// TestReplicaStateEncoding pins the JSON of replica states in volume
// commands and records (Raft log and snapshots): the type moved to
// replication, its encoding must not change.
func TestReplicaStateEncoding(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := VolumeCommand{Op: volSetState, At: at, By: "a", Epoch: 3, Peer: "b", State: SyncTarget}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"op":"set-state","at":"2026-01-02T03:04:05Z","by":"a","epoch":3,"peer":"b","state":"SyncTarget"}`
	if string(b) != want {
		t.Fatalf("set-state command encodes as\n%s\nwant\n%s", b, want)
	}
	for s, name := range map[ReplicaState]string{UpToDate: "UpToDate", Outdated: "Outdated", Inconsistent: "Inconsistent", SyncSource: "SyncSource", SyncTarget: "SyncTarget"} {
		var rr ReplicaRecord
		if err := json.Unmarshal([]byte(`{"node":"b","state":"`+name+`","since":"2026-01-02T03:04:05Z"}`), &rr); err != nil {
			t.Fatal(err)
		}
		if rr.State != s {
			t.Errorf("%q decodes as %q", name, rr.State)
		}
	}
	if !errors.Is(fmt.Errorf("wrapped: %w", ErrStaleEpoch), replication.ErrStaleEpoch) || !errors.Is(ErrNotPrimary, replication.ErrNotPrimary) {
		t.Error("consensus's ErrStaleEpoch and ErrNotPrimary must be replication's, which a primary checks for")
	}
}

// TestVolumeDetach: the primary records its own disk Failed only while
// another replica is UpToDate; the Failed replica can neither lead nor be
// outdated back into a bitmap resync, and returns through SyncTarget.
func TestVolumeDetach(t *testing.T) {
	m := newVolSM(t)
	if err := volApply(t, m, VolumeCommand{Op: volDetach, By: "b", Epoch: 1}); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("detach by a secondary: %v", err)
	}
	for _, p := range []string{"b", "c"} {
		if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "a", Epoch: 1, Peer: p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := volApply(t, m, VolumeCommand{Op: volDetach, By: "a", Epoch: 1}); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("detach with no other UpToDate replica: %v", err)
	}
	if m.r.Replicas["a"].State != UpToDate {
		t.Fatalf("a refused detach changed a to %s", m.r.Replicas["a"].State)
	}
	for _, s := range []ReplicaState{SyncTarget, UpToDate} {
		if err := volApply(t, m, VolumeCommand{Op: volSetState, By: "a", Epoch: 1, Peer: "b", State: s}); err != nil {
			t.Fatal(err)
		}
	}
	if err := volApply(t, m, VolumeCommand{Op: volDetach, By: "a", Epoch: 1, Reason: "I/O error"}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volDetach, By: "a", Epoch: 1}); err != nil {
		t.Fatalf("retried detach: %v", err)
	}
	if got := m.r.Replicas["a"].State; got != Failed {
		t.Fatalf("a is %s after detach", got)
	}
	if got := m.r.UpToDateReplicas(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("UpToDate replicas %v", got)
	}
	// I3: the promotion goes to the UpToDate peer; the old primary stays
	// Failed (a full resync), also when the new primary outdates it.
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "a"}); err != nil {
		t.Fatalf("promote the primary itself is a no-op: %v", err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "b", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if err := volApply(t, m, VolumeCommand{Op: volOutdate, By: "b", Epoch: 2, Peer: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := m.r.Replicas["a"].State; got != Failed {
		t.Fatalf("old primary is %s after promotion and outdate, want Failed", got)
	}
	if err := volApply(t, m, VolumeCommand{Op: volPromote, By: "op", Peer: "a", Epoch: 2}); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("promote a Failed replica: %v", err)
	}
	for _, s := range []ReplicaState{SyncTarget, UpToDate} {
		if err := volApply(t, m, VolumeCommand{Op: volSetState, By: "b", Epoch: 2, Peer: "a", State: s}); err != nil {
			t.Fatalf("Failed resync -> %s: %v", s, err)
		}
	}
}
