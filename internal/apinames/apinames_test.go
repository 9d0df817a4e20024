package apinames

import (
	"testing"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

// The API's names are the replication layer's (DRBD's), so a table, a JSON
// document and a log line name a state alike.
func TestReplicaStateMatchesReplication(t *testing.T) {
	cases := []struct {
		api  tandemv1.ReplicaState
		repl replication.ReplicaState
	}{
		{tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE, replication.UpToDate},
		{tandemv1.ReplicaState_REPLICA_STATE_OUTDATED, replication.Outdated},
		{tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT, replication.Inconsistent},
		{tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE, replication.SyncSource},
		{tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET, replication.SyncTarget},
	}
	for _, c := range cases {
		name, ok := ReplicaState(c.api)
		if !ok || name != string(c.repl) {
			t.Errorf("%v: %q %v, want %q", c.api, name, ok, c.repl)
		}
		if back := ReplicaStateNamed(string(c.repl)); back != c.api {
			t.Errorf("%q: %v, want %v", c.repl, back, c.api)
		}
	}
	if s := ReplicaStateNamed("Diskless"); s != tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED {
		t.Errorf("an unknown name: %v", s)
	}
	for _, s := range []tandemv1.ReplicaState{tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED, 99} {
		if name, ok := ReplicaState(s); ok || name != "" {
			t.Errorf("%v: %q %v, want unknown", s, name, ok)
		}
	}
}
