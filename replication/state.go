package replication

import "errors"

// ReplicaState names a replica's disk state, as DRBD's disk states do. The
// volume's Raft shard commits it (consensus aliases this type); it lives
// here so that the data path depends on nothing above it. The string values
// are part of the Raft log and snapshot encoding: never rename them.
type ReplicaState string

// Replica states.
const (
	// UpToDate holds every write the primary acknowledged.
	UpToDate ReplicaState = "UpToDate"
	// Outdated is consistent but missing writes the primary acknowledged
	// after it was fenced off ("peer Outdated").
	Outdated ReplicaState = "Outdated"
	// Inconsistent is partly resynced or never synced: unusable until a
	// resync completes.
	Inconsistent ReplicaState = "Inconsistent"
	// SyncSource is UpToDate and currently feeding a resync.
	SyncSource ReplicaState = "SyncSource"
	// SyncTarget is being resynced; its data is inconsistent until done.
	SyncTarget ReplicaState = "SyncTarget"
	// Failed is a replica whose disk returned an I/O error and was
	// detached (DRBD's on-io-error detach: Failed, then Diskless). Its
	// data is not to be trusted at all, and no bitmap says what it
	// misses: it comes back only by a full resync. Only the primary's own
	// replica becomes Failed (detach); it may keep serving diskless,
	// through its in-sync peers.
	Failed ReplicaState = "Failed"
)

// Refusals a Fencer reports (wrapped) when this node no longer owns the
// volume: the primary deposes itself on either. consensus returns these
// same values from its volume state machine.
var (
	ErrStaleEpoch = errors.New("stale epoch")
	ErrNotPrimary = errors.New("not the primary of this volume")
)
