package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/tandemhci/tandem/replication"
)

// ReplicaState names a replica's disk state. It is replication's type, so
// that the data path needs nothing of consensus; the alias keeps this
// package's API and the JSON of volume records (Raft log and snapshots)
// unchanged.
type ReplicaState = replication.ReplicaState

// Replica states (see replication.ReplicaState).
const (
	UpToDate     = replication.UpToDate
	Outdated     = replication.Outdated
	Inconsistent = replication.Inconsistent
	SyncSource   = replication.SyncSource
	SyncTarget   = replication.SyncTarget
	Failed       = replication.Failed
)

// Errors of the volume state machine (see ResultError).
var (
	// ErrStaleEpoch and ErrNotPrimary are replication's values, so that a
	// primary recognises the refusals that depose it without importing
	// consensus.
	ErrStaleEpoch     = replication.ErrStaleEpoch
	ErrNotPrimary     = replication.ErrNotPrimary
	ErrNotReplica     = errors.New("not a replica of this volume")
	ErrNotUpToDate    = errors.New("replica is not UpToDate")
	ErrBadTransition  = errors.New("replica state transition not allowed")
	ErrVolumeExists   = errors.New("volume record already initialised")
	ErrNoVolumeRecord = errors.New("volume record not initialised")
)

var volumeResultErrors = []error{nil, ErrStaleEpoch, ErrNotPrimary, ErrNotReplica, ErrNotUpToDate, ErrBadTransition, ErrVolumeExists, ErrNoVolumeRecord, ErrBadCommand}

// maxVolumeHistory bounds the transitions kept in a volume record.
const maxVolumeHistory = 64

// ReplicaRecord is one replica's committed state.
type ReplicaRecord struct {
	Node  string       `json:"node"`
	State ReplicaState `json:"state"`
	Since time.Time    `json:"since"`
	// Reconcile is set on secondaries when the primary changes: they may hold
	// writes the old primary never acknowledged, which the new primary
	// finds and overwrites (an online verify with repair; a resync of
	// such a replica before that copies everything). They stay UpToDate
	// meanwhile: every acknowledged write is on them.
	Reconcile bool `json:"reconcile,omitempty"`
}

// VolumeEvent is one committed transition, kept for operators.
type VolumeEvent struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Epoch  uint64    `json:"epoch"`
	What   string    `json:"what"`
	Reason string    `json:"reason,omitempty"`
}

// VolumeRecord is the content of a volume's own Raft shard: who may write
// (primary, epoch) and which replicas hold every acknowledged write.
type VolumeRecord struct {
	Name     string                    `json:"name"`
	ShardID  uint64                    `json:"shard_id"`
	Size     int64                     `json:"size"`
	Epoch    uint64                    `json:"epoch"`
	Primary  string                    `json:"primary"`
	Replicas map[string]*ReplicaRecord `json:"replicas"`
	Witness  string                    `json:"witness,omitempty"`
	// MigrationTarget is the one other node allowed to open the volume for
	// a live migration (I5); empty outside of a migration.
	MigrationTarget string        `json:"migration_target,omitempty"`
	History         []VolumeEvent `json:"history"`
	Applied         uint64        `json:"applied"`
}

// Initialised reports whether the record was created.
func (r *VolumeRecord) Initialised() bool { return r.Name != "" }

// UpToDateReplicas lists replicas holding every acknowledged write, sorted.
func (r *VolumeRecord) UpToDateReplicas() []string {
	var out []string
	for n, rr := range r.Replicas {
		if rr.State == UpToDate || rr.State == SyncSource {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// VolumeCommand is one replicated change to a volume record. Epoch and By
// guard every change the primary makes: a stale primary's commands fail
// with ErrStaleEpoch or ErrNotPrimary, which is how it learns it was deposed.
type VolumeCommand struct {
	Op     string        `json:"op"`
	At     time.Time     `json:"at"`
	By     string        `json:"by"`
	Epoch  uint64        `json:"epoch,omitempty"`
	Init   *VolumeRecord `json:"init,omitempty"`
	Peer   string        `json:"peer,omitempty"`
	State  ReplicaState  `json:"state,omitempty"`
	Reason string        `json:"reason,omitempty"`
}

const (
	volInit     = "init"
	volOutdate  = "outdate"
	volSetState = "set-state"
	volPromote  = "promote"
	// I5: allow-dual opens a migration to one UpToDate peer, handover
	// commits that peer as the single primary, end-dual closes it unused.
	volAllowDual = "allow-dual"
	volHandover  = "handover"
	volEndDual   = "end-dual"
	// detach: the primary's own disk failed; it serves diskless through
	// its UpToDate peers (DRBD's on-io-error detach).
	volDetach = "detach"
)

// allowedTransitions are the moves the primary may commit with set-state.
// UpToDate -> Outdated goes through "outdate", and promotion through
// "promote", because those carry the invariants I2 and I3.
func allowedTransition(from, to ReplicaState) bool {
	switch to {
	case SyncTarget:
		// A Failed replica comes back by a full resync.
		return from == Outdated || from == Inconsistent || from == Failed
	case UpToDate:
		return from == SyncTarget || from == SyncSource
	case SyncSource:
		return from == UpToDate
	case Inconsistent:
		return from == SyncTarget || from == Outdated
	}
	return false
}

type volumeSM struct {
	r *VolumeRecord
	// observe, when set, gets a copy of the record after every change; it
	// runs on dragonboat's apply path and must not block.
	observe func(*VolumeRecord)
}

func (m *volumeSM) notify() {
	if m.observe == nil || !m.r.Initialised() {
		return
	}
	if c, err := cloneVolume(m.r); err == nil {
		m.observe(c)
	}
}

// NewVolumeStateMachine is the dragonboat factory for volume shards.
func NewVolumeStateMachine(_, _ uint64) sm.IStateMachine {
	return &volumeSM{r: &VolumeRecord{Replicas: map[string]*ReplicaRecord{}}}
}

func (m *volumeSM) Update(e sm.Entry) (sm.Result, error) {
	m.r.Applied = e.Index
	var c VolumeCommand
	if err := json.Unmarshal(e.Cmd, &c); err != nil {
		return rejectWith(volumeResultErrors, fmt.Errorf("%w: %v", ErrBadCommand, err)), nil
	}
	if err := m.apply(&c); err != nil {
		return rejectWith(volumeResultErrors, err), nil
	}
	m.notify()
	b, err := json.Marshal(m.r)
	if err != nil {
		return rejectWith(volumeResultErrors, fmt.Errorf("%w: %v", ErrBadCommand, err)), nil
	}
	return sm.Result{Value: 0, Data: b}, nil
}

func (m *volumeSM) event(c *VolumeCommand, what string) {
	m.r.History = append(m.r.History, VolumeEvent{At: c.At, By: c.By, Epoch: m.r.Epoch, What: what, Reason: c.Reason})
	if over := len(m.r.History) - maxVolumeHistory; over > 0 {
		m.r.History = append([]VolumeEvent(nil), m.r.History[over:]...)
	}
}

// guardedPeer checks c as guardPrimary does, then returns the replica c
// names in Peer.
func (m *volumeSM) guardedPeer(c *VolumeCommand) (*ReplicaRecord, error) {
	if err := m.guardPrimary(c); err != nil {
		return nil, err
	}
	rr, ok := m.r.Replicas[c.Peer]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotReplica, c.Peer)
	}
	return rr, nil
}

// guardPrimary checks that a command comes from the current epoch's primary.
func (m *volumeSM) guardPrimary(c *VolumeCommand) error {
	if c.Epoch != m.r.Epoch {
		return fmt.Errorf("%w: command for epoch %d, volume is at epoch %d", ErrStaleEpoch, c.Epoch, m.r.Epoch)
	}
	if c.By != m.r.Primary {
		return fmt.Errorf("%w: %s is not the primary (%s is)", ErrNotPrimary, c.By, m.r.Primary)
	}
	return nil
}

func (m *volumeSM) apply(c *VolumeCommand) error {
	r := m.r
	if c.Op != volInit && !r.Initialised() {
		return ErrNoVolumeRecord
	}
	switch c.Op {
	case volInit:
		if r.Initialised() {
			if c.Init != nil && c.Init.Name == r.Name && c.Init.ShardID == r.ShardID {
				return nil // retried proposal
			}
			return ErrVolumeExists
		}
		in := c.Init
		if in == nil || in.Name == "" || in.Size <= 0 || len(in.Replicas) == 0 || in.Replicas[in.Primary] == nil {
			return fmt.Errorf("%w: init needs a name, a size and replicas including the primary", ErrBadCommand)
		}
		n := *in
		n.Replicas = map[string]*ReplicaRecord{}
		for name, rr := range in.Replicas {
			cp := *rr
			cp.Node, cp.Since = name, c.At
			n.Replicas[name] = &cp
		}
		n.History, n.Applied = nil, r.Applied
		if n.Epoch == 0 {
			n.Epoch = 1
		}
		m.r = &n
		m.event(c, fmt.Sprintf("created with primary %s", n.Primary))
		return nil
	case volOutdate:
		rr, err := m.guardedPeer(c)
		if err != nil {
			return err
		}
		if c.Peer == r.Primary {
			return fmt.Errorf("%w: the primary cannot outdate itself", ErrBadTransition)
		}
		if rr.State == Outdated || rr.State == Inconsistent || rr.State == Failed {
			// Already fenced off: retried or repeated. A Failed replica
			// stays Failed: no bitmap covers what it misses.
			return nil
		}
		prev := rr.State
		rr.State, rr.Since = Outdated, c.At
		if prev == SyncTarget {
			rr.State = Inconsistent
		}
		m.event(c, fmt.Sprintf("%s %s -> %s", c.Peer, prev, rr.State))
		return nil
	case volSetState:
		rr, err := m.guardedPeer(c)
		if err != nil {
			return err
		}
		if rr.State == c.State {
			if c.State == UpToDate && rr.Reconcile {
				// The new primary has overwritten what the old one may
				// have left unacknowledged on this replica.
				rr.Reconcile = false
				m.event(c, c.Peer+" reconciled")
			}
			return nil
		}
		if !allowedTransition(rr.State, c.State) {
			return fmt.Errorf("%w: %s %s -> %s", ErrBadTransition, c.Peer, rr.State, c.State)
		}
		prev := rr.State
		rr.State, rr.Since = c.State, c.At
		if c.State == UpToDate {
			rr.Reconcile = false
		}
		m.event(c, fmt.Sprintf("%s %s -> %s", c.Peer, prev, c.State))
		return nil
	case volPromote:
		rr, ok := r.Replicas[c.Peer]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotReplica, c.Peer)
		}
		if c.Peer == r.Primary {
			return nil
		}
		// I3: only a replica holding every acknowledged write may lead.
		if rr.State != UpToDate {
			return fmt.Errorf("%w: %s is %s", ErrNotUpToDate, c.Peer, rr.State)
		}
		if c.Epoch != 0 && c.Epoch != r.Epoch {
			return fmt.Errorf("%w: promotion expected epoch %d, volume is at epoch %d", ErrStaleEpoch, c.Epoch, r.Epoch)
		}
		old := r.Primary
		r.Epoch++
		r.Primary = c.Peer
		r.MigrationTarget = ""
		rr.Reconcile = false
		for name, o := range r.Replicas {
			switch {
			case name == old && o.State == Failed:
				// A detached primary's disk needs a full resync.
			case name == old:
				// The deposed primary may hold writes it never got
				// acknowledged and misses the new primary's: resync.
				o.State, o.Since = Outdated, c.At
			case name != c.Peer && (o.State == UpToDate || o.State == SyncSource):
				o.State, o.Reconcile = UpToDate, true
			}
		}
		m.event(c, fmt.Sprintf("promoted %s (was %s)", c.Peer, old))
		return nil
	case volAllowDual:
		rr, err := m.guardedPeer(c)
		if err != nil {
			return err
		}
		switch {
		case c.Peer == r.Primary:
			return fmt.Errorf("%w: %s is already the primary", ErrBadTransition, c.Peer)
		case rr.State != UpToDate:
			return fmt.Errorf("%w: migration target %s is %s", ErrNotUpToDate, c.Peer, rr.State)
		case r.MigrationTarget == c.Peer:
			return nil
		case r.MigrationTarget != "":
			return fmt.Errorf("%w: a migration to %s is already open", ErrBadTransition, r.MigrationTarget)
		}
		r.MigrationTarget = c.Peer
		m.event(c, fmt.Sprintf("dual-primary allowed for %s and %s", r.Primary, c.Peer))
		return nil
	case volEndDual:
		if err := m.guardPrimary(c); err != nil {
			return err
		}
		if r.MigrationTarget == "" {
			return nil
		}
		m.event(c, fmt.Sprintf("dual-primary window to %s closed", r.MigrationTarget))
		r.MigrationTarget = ""
		return nil
	case volDetach:
		if err := m.guardPrimary(c); err != nil {
			return err
		}
		self := r.Replicas[r.Primary]
		if self == nil {
			return fmt.Errorf("%w: %s", ErrNotReplica, r.Primary)
		}
		if self.State == Failed {
			return nil // retried
		}
		// Never leave the volume without a replica holding every
		// acknowledged write: the primary keeps serving through them.
		others := 0
		for name, o := range r.Replicas {
			if name != r.Primary && o.State == UpToDate {
				others++
			}
		}
		if others == 0 {
			return fmt.Errorf("%w: no other replica is UpToDate; %s cannot detach its disk", ErrNotUpToDate, r.Primary)
		}
		prev := self.State
		self.State, self.Since = Failed, c.At
		m.event(c, fmt.Sprintf("%s %s -> %s (disk detached; serving diskless)", r.Primary, prev, Failed))
		return nil
	case volHandover:
		rr, err := m.guardedPeer(c)
		if err != nil {
			return err
		}
		switch {
		case r.MigrationTarget != c.Peer:
			return fmt.Errorf("%w: no migration to %s is open", ErrBadTransition, c.Peer)
		case rr.State != UpToDate:
			return fmt.Errorf("%w: migration target %s is %s", ErrNotUpToDate, c.Peer, rr.State)
		}
		// The old primary drained its writes before proposing this: every
		// replica holds the same data, so it stays UpToDate (I5 step 5).
		old := r.Primary
		r.Epoch++
		r.Primary = c.Peer
		r.MigrationTarget = ""
		rr.Since = c.At
		r.Replicas[old].Since = c.At
		m.event(c, fmt.Sprintf("handed over to %s (was %s)", c.Peer, old))
		return nil
	}
	return fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

func (m *volumeSM) Lookup(q any) (any, error) {
	if _, ok := q.(stateQuery); !ok {
		return nil, fmt.Errorf("unknown volume query %T", q)
	}
	return cloneVolume(m.r)
}

func cloneVolume(r *VolumeRecord) (*VolumeRecord, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var c VolumeRecord
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if c.Replicas == nil {
		c.Replicas = map[string]*ReplicaRecord{}
	}
	return &c, nil
}

func (m *volumeSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(m.r)
}

func (m *volumeSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read volume snapshot: %w", err)
	}
	var rec VolumeRecord
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&rec); err != nil {
		return fmt.Errorf("corrupt volume snapshot: %w", err)
	}
	if rec.Replicas == nil {
		return errors.New("corrupt volume snapshot: no replicas")
	}
	m.r = &rec
	m.notify()
	return nil
}

func (m *volumeSM) Close() error { return nil }

// Volumes is the typed client of volume shards on one host.
type Volumes struct {
	h    *Host
	node string
	now  func() time.Time
}

// NewVolumes returns the volume-shard client for the node named node.
func NewVolumes(h *Host, node string) *Volumes {
	return &Volumes{h: h, node: node, now: time.Now}
}

// Start starts this host's replica (or witness) of a volume shard, a
// sparse shard (sparse.go).
func (v *Volumes) Start(spec ShardSpec) error {
	spec.Sparse = true
	return v.h.StartShard(spec, NewVolumeStateMachine)
}

// StartObserved is Start with observe called (without blocking) on every
// committed change of the record, including its replay after a restart.
func (v *Volumes) StartObserved(spec ShardSpec, observe func(*VolumeRecord)) error {
	spec.Sparse = true
	return v.h.StartShard(spec, func(_, _ uint64) sm.IStateMachine {
		return &volumeSM{r: &VolumeRecord{Replicas: map[string]*ReplicaRecord{}}, observe: observe}
	})
}

func (v *Volumes) propose(ctx context.Context, shardID uint64, c VolumeCommand) (*VolumeRecord, error) {
	c.At = v.now().UTC()
	if c.By == "" {
		c.By = v.node
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Op, err)
	}
	res, err := v.h.Propose(ctx, shardID, b)
	if err != nil {
		return nil, err
	}
	if err := resultError(volumeResultErrors, res); err != nil {
		return nil, err
	}
	var rec VolumeRecord
	if err := json.Unmarshal(res.Data, &rec); err != nil {
		return nil, fmt.Errorf("decode volume record: %w", err)
	}
	return &rec, nil
}

// Init writes the volume's first record (epoch 1 unless set).
func (v *Volumes) Init(ctx context.Context, rec VolumeRecord) (*VolumeRecord, error) {
	rec.Replicas = maps.Clone(rec.Replicas)
	return v.propose(ctx, rec.ShardID, VolumeCommand{Op: volInit, Init: &rec})
}

// Outdate commits "peer Outdated" (DRBD's fence-peer): the primary of epoch
// may then acknowledge writes without that peer.
func (v *Volumes) Outdate(ctx context.Context, shardID, epoch uint64, peer, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volOutdate, Epoch: epoch, Peer: peer, Reason: reason})
}

// SetReplicaState commits a resync transition for peer, as the primary of epoch.
func (v *Volumes) SetReplicaState(ctx context.Context, shardID, epoch uint64, peer string, s ReplicaState, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volSetState, Epoch: epoch, Peer: peer, State: s, Reason: reason})
}

// Promote makes node the primary with a new epoch, if it is UpToDate. When
// expectEpoch is non-zero the promotion fails unless the volume is still at
// that epoch (so two recoveries cannot both promote).
func (v *Volumes) Promote(ctx context.Context, shardID uint64, node string, expectEpoch uint64, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volPromote, Peer: node, Epoch: expectEpoch, Reason: reason})
}

// Detach records that the primary of epoch detached its own failed disk
// (state Failed): it keeps serving through its UpToDate peers, and its disk
// comes back only by a full resync. Refused with ErrNotUpToDate when no
// other replica is UpToDate.
func (v *Volumes) Detach(ctx context.Context, shardID, epoch uint64, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volDetach, Epoch: epoch, Reason: reason})
}

// AllowDual lets peer open the volume for a live migration (I5 step 2).
func (v *Volumes) AllowDual(ctx context.Context, shardID, epoch uint64, peer, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volAllowDual, Epoch: epoch, Peer: peer, Reason: reason})
}

// EndDual closes a migration window that was not used.
func (v *Volumes) EndDual(ctx context.Context, shardID, epoch uint64, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volEndDual, Epoch: epoch, Reason: reason})
}

// Handover makes the migration target the single primary (a new epoch); the
// caller, the drained primary of epoch, stays an UpToDate secondary.
func (v *Volumes) Handover(ctx context.Context, shardID, epoch uint64, peer, reason string) (*VolumeRecord, error) {
	return v.propose(ctx, shardID, VolumeCommand{Op: volHandover, Epoch: epoch, Peer: peer, Reason: reason})
}

// Record is a linearizable read of the volume record.
func (v *Volumes) Record(ctx context.Context, shardID uint64) (*VolumeRecord, error) {
	out, err := v.h.Read(ctx, shardID, stateQuery{})
	if err != nil {
		return nil, err
	}
	return out.(*VolumeRecord), nil
}

// LocalRecord reads this replica's copy without quorum; it may be stale.
func (v *Volumes) LocalRecord(shardID uint64) (*VolumeRecord, error) {
	out, err := v.h.StaleRead(shardID, stateQuery{})
	if err != nil {
		return nil, err
	}
	return out.(*VolumeRecord), nil
}
