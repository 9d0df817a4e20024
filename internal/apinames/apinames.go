package apinames

import tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"

// replicaStates are the API's replica states by DRBD's disk state names,
// which admins already know. replication.ReplicaState and
// placement.Replica use the same names, so this one table converts between
// all three.
var replicaStates = [...]struct {
	api  tandemv1.ReplicaState
	name string
}{
	{tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE, "UpToDate"},
	{tandemv1.ReplicaState_REPLICA_STATE_OUTDATED, "Outdated"},
	{tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT, "Inconsistent"},
	{tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE, "SyncSource"},
	{tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET, "SyncTarget"},
	{tandemv1.ReplicaState_REPLICA_STATE_FAILED, "Failed"},
}

// ReplicaState is a replica's state by its name. ok is false for
// REPLICA_STATE_UNSPECIFIED and for any state newer than this build.
func ReplicaState(s tandemv1.ReplicaState) (name string, ok bool) {
	for _, r := range replicaStates {
		if r.api == s {
			return r.name, true
		}
	}
	return "", false
}

// ReplicaStateNamed is the API state of a name ReplicaState returns;
// any other name is REPLICA_STATE_UNSPECIFIED.
func ReplicaStateNamed(name string) tandemv1.ReplicaState {
	for _, r := range replicaStates {
		if r.name == name {
			return r.api
		}
	}
	return tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}
