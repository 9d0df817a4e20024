package consensus

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/tandemhci/tandem/internal/invariant"
)

// Readers of the metadata (LocalState, State) share one read-only copy of
// the applied state, published lazily: the first read after a change makes
// a deep copy and every later read, until the next applied entry, returns
// that same pointer. Before, every read copied the whole state through
// JSON, and with many volumes the per-second reads of every volume's
// reconcile loop and every RPC made that cost grow with volumes squared.
//
// The price is a contract: a *MetaState returned by LocalState or State is
// shared and must never be mutated (maps, slices, records). A caller that
// wants to change what it read takes its own copy (Clone). With
// HostConfig.CheckMetaReaders set (tests and the e2e harness), each
// retired copy is checked against the digest taken when it was published,
// and a difference is logged as an error and counted (Meta.ReaderMutations).

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
	b, err := json.Marshal(m.s)
	if err != nil {
		panic(fmt.Sprintf("metadata state not serialisable: %v", err))
	}
	var c MetaState
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("metadata state not deserialisable: %v", err))
	}
	p := &publishedState{s: &c}
	if m.checkReaders {
		p.sum = sha256.Sum256(b)
	}
	if m.pub.CompareAndSwap(nil, p) {
		return p.s
	}
	return m.pub.Load().s
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
