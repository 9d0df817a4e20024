package consensus

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// bootstrappedSM is a state machine with cluster c bootstrapped by node a;
// apply stamps each command with *at.
func bootstrappedSM(t *testing.T) (*metaSM, *time.Time, func(Command) ([]byte, error)) {
	t.Helper()
	m := checkedSM(t)
	at := time.Now()
	apply := func(c Command) ([]byte, error) {
		c.At = at
		return m.checkedApply(&c)
	}
	if _, err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	return m, &at, apply
}

func TestStorageAndRBDVolumes(t *testing.T) {
	m, at, apply := bootstrappedSM(t)
	m.s.Nodes["b"] = &NodeRecord{Name: "b", State: NodeMember}
	st := StorageRecord{Name: "ceph1", Type: StorageRBD, MonHost: "10.0.0.5", Client: "tandem", Pool: "rbd"}

	// A plain key never enters the state.
	st.KeySealed = "AQBplainkey=="
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); !errors.Is(err, ErrBadCommand) || len(m.s.Storage) != 0 {
		t.Fatalf("plain key: %v, %d storages", err, len(m.s.Storage))
	}
	st.KeySealed = "tdms1.sealed"
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); err != nil {
		t.Fatal(err)
	}
	// A retried proposal answers the same; another add of the name is refused.
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); err != nil {
		t.Fatalf("retried add: %v", err)
	}
	*at = at.Add(time.Second)
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("second add: %v", err)
	}

	rbdVol := VolumeEntry{Name: "v1", Size: 1 << 30, Backend: BackendRBD, Storage: "ceph1", Pool: "rbd", Image: "v1", Owner: "a"}
	bad := rbdVol
	bad.Storage = "nope"
	if _, err := apply(Command{Op: opVolumeCreate, Volume: &bad}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown storage: %v", err)
	}
	bad = rbdVol
	bad.Owner = "zz"
	if _, err := apply(Command{Op: opVolumeCreate, Volume: &bad}); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("unknown owner: %v", err)
	}
	bad = rbdVol
	bad.Replicas = []string{"a"}
	if _, err := apply(Command{Op: opVolumeCreate, Volume: &bad}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("RBD volume with replicas: %v", err)
	}
	bad = VolumeEntry{Name: "v9", Size: 1 << 30, Backend: "lvm", Replicas: []string{"a"}}
	if _, err := apply(Command{Op: opVolumeCreate, Volume: &bad}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown backend: %v", err)
	}
	next := m.s.NextShardID
	if _, err := apply(Command{Op: opVolumeCreate, Volume: &rbdVol}); err != nil {
		t.Fatal(err)
	}
	e := m.s.Volumes["v1"]
	if e == nil || e.ShardID != 0 || e.Epoch != 1 || e.Owner != "a" || m.s.NextShardID != next {
		t.Fatalf("RBD entry %+v (next shard %d, was %d)", e, m.s.NextShardID, next)
	}

	// Owner changes compare the epoch and raise it.
	if _, err := apply(Command{Op: opVolumeRBD, VolumeRBD: &VolumeRBDCmd{Name: "v1", Owner: "b", Epoch: 0}}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale epoch: %v", err)
	}
	out, err := apply(Command{Op: opVolumeRBD, VolumeRBD: &VolumeRBDCmd{Name: "v1", Owner: "b", Epoch: 1, Blocklisted: []string{"10.0.0.11:0/1"}}})
	if err != nil {
		t.Fatal(err)
	}
	var got VolumeEntry
	if err := json.Unmarshal(out, &got); err != nil || got.Owner != "b" || got.Epoch != 2 {
		t.Fatalf("after takeover: %+v %v", got, err)
	}
	// The same proposal again (a retry) is answered, not refused; a
	// competing one at the old epoch is refused.
	if _, err := apply(Command{Op: opVolumeRBD, VolumeRBD: &VolumeRBDCmd{Name: "v1", Owner: "b", Epoch: 1}}); err != nil {
		t.Fatalf("retried owner change: %v", err)
	}
	if _, err := apply(Command{Op: opVolumeRBD, VolumeRBD: &VolumeRBDCmd{Name: "v1", Owner: "a", Epoch: 1}}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("competing owner change: %v", err)
	}
	last := m.s.Events[len(m.s.Events)-1]
	if last.Kind != "volume-owner" || !strings.Contains(last.Detail, "10.0.0.11:0/1") {
		t.Fatalf("owner event: %+v", last)
	}
	if _, err := apply(Command{Op: opVolumeRBD, VolumeRBD: &VolumeRBDCmd{Name: "v1", Size: 2 << 30}}); err != nil || m.s.Volumes["v1"].Size != 2<<30 {
		t.Fatalf("resize: %v", err)
	}

	// A storage holding volumes stays.
	if _, err := apply(Command{Op: opStorageRemove, Storage: &StorageRecord{Name: "ceph1"}}); !errors.Is(err, ErrBadCommand) || m.s.Storage["ceph1"] == nil {
		t.Fatalf("remove while used: %v", err)
	}
	if _, err := apply(Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: "v1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(Command{Op: opStorageRemove, Storage: &StorageRecord{Name: "ceph1"}}); err != nil || m.s.Storage["ceph1"] != nil {
		t.Fatalf("remove: %v", err)
	}

	// Snapshots keep storages.
	st.Name = "ceph2"
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); err != nil {
		t.Fatal(err)
	}
	c := m.s.clone()
	if c.Storage["ceph2"] == nil || c.Storage["ceph2"].KeySealed != "tdms1.sealed" {
		t.Fatalf("clone lost the storage: %+v", c.Storage)
	}
}

// TestStorageBlocklist: entries are recorded (one per address), removed
// only by their own node, and forgotten once Ceph expired them.
func TestStorageBlocklist(t *testing.T) {
	m, at, apply := bootstrappedSM(t)
	st := StorageRecord{Name: "ceph1", Type: StorageRBD, MonHost: "10.0.0.5", Client: "tandem", Pool: "rbd", KeySealed: "tdms1.sealed"}
	if _, err := apply(Command{Op: opStorageAdd, Storage: &st}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "nope", Add: []BlockedClient{{Addr: "x"}}}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown storage: %v", err)
	}
	day := at.Add(24 * time.Hour)
	add := []BlockedClient{
		{Addr: "10.0.0.11:0/1", Node: "b", Volume: "v1", Expires: day},
		{Addr: "10.0.0.11:0/2", Node: "b", Volume: "v1", Expires: day},
		{Addr: "10.0.0.12:0/3", Node: "c", Volume: "v2", Expires: day},
		{Addr: "10.0.0.11:0/1", Node: "b", Volume: "v1", Expires: day}, // again
	}
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "ceph1", Add: add}}); err != nil {
		t.Fatal(err)
	}
	before := m.s.clone()
	if got := m.s.Storage["ceph1"].Blocklisted; len(got) != 3 || !got[0].Since.Equal(*at) {
		t.Fatalf("recorded %+v", got)
	}
	// Without a node, nothing is removed; c cannot remove b's entries.
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "ceph1", Remove: []string{"10.0.0.11:0/1"}}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("removal without node: %v", err)
	}
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "ceph1", Node: "c", Remove: []string{"10.0.0.11:0/1"}}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.Storage["ceph1"].Blocklisted; len(got) != 3 {
		t.Fatalf("another node removed an entry: %+v", got)
	}
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "ceph1", Node: "b", Remove: []string{"10.0.0.11:0/1", "10.0.0.11:0/2"}, Proof: "no process left"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.Storage["ceph1"].Blocklisted; len(got) != 1 || got[0].Node != "c" {
		t.Fatalf("after b's removal: %+v", got)
	}
	last := m.s.Events[len(m.s.Events)-1]
	if last.Kind != "rbd-unblocklist" || !strings.Contains(last.Detail, "10.0.0.11:0/2") || !strings.Contains(last.Detail, "no process left") {
		t.Fatalf("event %+v", last)
	}
	// The record copied before the changes is unchanged.
	if got := before.Storage["ceph1"].Blocklisted; len(got) != 3 {
		t.Fatalf("an earlier copy changed: %+v", got)
	}
	// Expired entries go at the next change.
	*at = day.Add(time.Second)
	if _, err := apply(Command{Op: opStorageBlocklist, StorageBlocklist: &StorageBlocklistCmd{Storage: "ceph1"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.Storage["ceph1"].Blocklisted; len(got) != 0 {
		t.Fatalf("expired entries kept: %+v", got)
	}
}
