package consensus

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/tandemhci/tandem/internal/invariant"
)

// Readers of the metadata (LocalState, State) share one read-only copy of
// the applied state, published lazily: the first read after a change makes
// the copy and every later read, until the next applied entry, returns
// that same pointer. Before, every read copied the whole state through
// JSON, and with many volumes the per-second reads of every volume's
// reconcile loop and every RPC made that cost grow with volumes squared.
//
// Publishing is copy on write, so that it does not grow with the volumes
// either (issue 17: at 1000 volumes a JSON copy took 9 ms inside the
// state machine's lookup, which holds off the next apply, and the
// metadata shard fell behind during a mass failover). The volume and VM
// records, and the event and audit logs, are shared between the applied
// state and every copy published from it; only the small rest (nodes,
// tokens, credentials, config...) is deep-copied. Two rules keep that
// safe:
//   - apply never changes a volume or VM record in place: it takes a
//     private copy with volumeForUpdate or vmForUpdate, which replaces the
//     shared record in the applied state;
//   - the event and audit logs are only appended to, or replaced by a new
//     slice when trimmed; a published copy's slices are clipped, so an
//     append never writes inside what a reader sees.
//
// The price for readers is a contract: a *MetaState returned by
// LocalState or State is shared and must never be mutated (maps, slices,
// records). A caller that wants to change what it read takes its own copy
// (Clone). With HostConfig.CheckMetaReaders set (tests and the e2e
// harness), every applied entry is published at once and each retired
// copy is checked against the digest taken when it was published; a
// difference, from a reader or from an apply that broke the rules above,
// is logged as an error and counted (Meta.ReaderMutations).

// publishedState is the shared read-only copy and the digest of its JSON.
type publishedState struct {
	s   *MetaState
	sum [sha256.Size]byte
}

// readerMutationsQuery asks how many retired copies were found mutated.
type readerMutationsQuery struct{}

// ReaderMutationMessage is logged when a retired shared copy of the
// metadata differs from what was published: some caller mutated what
// LocalState or State returned. The test harness fails a test on it.
const ReaderMutationMessage = invariant.ReaderMutation

// published returns the shared read-only copy of the applied state,
// making it if this is the first read since the last change. Lookups run
// concurrently with each other but never with Update (dragonboat holds the
// state machine's lock), so two first readers may both build a copy; one
// wins and both return the winner.
func (m *metaSM) published() *MetaState {
	if p := m.pub.Load(); p != nil {
		return p.s
	}
	p := &publishedState{s: m.s.shareCopy()}
	if m.checkReaders {
		b, err := json.Marshal(p.s)
		if err != nil {
			panic(fmt.Sprintf("metadata state not serialisable: %v", err))
		}
		p.sum = sha256.Sum256(b)
	}
	if m.pub.CompareAndSwap(nil, p) {
		return p.s
	}
	return m.pub.Load().s
}

// shareCopy is the copy published to readers: the volume and VM records
// and the logs shared with s (see the rules above), the rest deep-copied.
func (s *MetaState) shareCopy() *MetaState {
	rest := *s
	rest.Volumes, rest.VMs, rest.Events, rest.Audit = nil, nil, nil, nil
	c := cloneJSON(&rest)
	c.Volumes = maps.Clone(s.Volumes)
	c.VMs = maps.Clone(s.VMs)
	c.Events = slices.Clip(s.Events)
	c.Audit = slices.Clip(s.Audit)
	return c
}

// cloneJSON deep-copies v through its JSON form, which is what the
// replicas agree on (snapshots are JSON), so the copy is exactly as
// deterministic as the original.
func cloneJSON[T any](v *T) *T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("metadata record not serialisable: %v", err))
	}
	var c T
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("metadata record not deserialisable: %v", err))
	}
	return &c
}

// volumeForUpdate returns volume name's record for apply to change: a
// private copy that replaces the one published copies may share.
func (m *metaSM) volumeForUpdate(name string) (*VolumeEntry, bool) {
	e, ok := m.s.Volumes[name]
	if !ok {
		return nil, false
	}
	e = cloneJSON(e)
	m.s.Volumes[name] = e
	return e, true
}

// vmForUpdate is volumeForUpdate for VM records.
func (m *metaSM) vmForUpdate(name string) (*VMRecord, bool) {
	v, ok := m.s.VMs[name]
	if !ok {
		return nil, false
	}
	v = cloneJSON(v)
	m.s.VMs[name] = v
	return v, true
}

// retire drops the shared copy after a change (Update, snapshot recovery):
// the next read publishes a new one. With checkReaders, the old copy must
// still be what was published.
func (m *metaSM) retire() {
	p := m.pub.Swap(nil)
	if p == nil || !m.checkReaders {
		return
	}
	b, err := json.Marshal(p.s)
	if err == nil && sha256.Sum256(b) == p.sum {
		return
	}
	m.readerMutations.Add(1)
	log := m.log
	if log == nil {
		log = slog.Default()
	}
	log.Error(ReaderMutationMessage, "applied", p.s.Applied)
}

// Clone returns a deep copy of s that the caller may change.
func (s *MetaState) Clone() *MetaState { return s.clone() }

// ReaderMutations is how many shared copies of the metadata this replica
// found mutated by a reader since it started; always 0 unless
// HostConfig.CheckMetaReaders is set.
func (m *Meta) ReaderMutations() (uint64, error) {
	v, err := m.h.StaleRead(MetaShardID, readerMutationsQuery{})
	if err != nil {
		return 0, fmt.Errorf("metadata not readable yet: %w", err)
	}
	n, _ := v.(uint64)
	return n, nil
}
