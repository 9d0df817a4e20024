package apinames

import tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"

// ReplicaState is a replica's state by DRBD's disk state names, which
// admins already know. ok is false for REPLICA_STATE_UNSPECIFIED and for
// any state newer than this build.
func ReplicaState(s tandemv1.ReplicaState) (name string, ok bool) {
	switch s {
	case tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE:
		return "UpToDate", true
	case tandemv1.ReplicaState_REPLICA_STATE_OUTDATED:
		return "Outdated", true
	case tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT:
		return "Inconsistent", true
	case tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE:
		return "SyncSource", true
	case tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET:
		return "SyncTarget", true
	}
	return "", false
}
