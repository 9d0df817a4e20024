package daemon

import (
	"testing"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestStateName(t *testing.T) {
	for st, want := range map[tandemv1.ReplicaState]string{
		tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE:  "UpToDate",
		tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET: "SyncTarget",
		tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED: "no replica",
	} {
		if got := stateName(st); got != want {
			t.Errorf("stateName(%v) = %q, want %q", st, got, want)
		}
	}
}
