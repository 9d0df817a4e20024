package volume

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/consensus"
)

// smallFS mounts a tmpfs of size bytes (root only) for a real ENOSPC.
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestReplicaOutOfSpaceIsResourceExhausted: a replica that does not fit
// (issue 19: fallocate's ENOSPC came back as Internal) is refused with
// ResourceExhausted, naming the node and the sizes in human units.
func TestReplicaOutOfSpaceIsResourceExhausted(t *testing.T) {
	dir := smallFS(t, 8<<20)
	opts := blockstore.CreateOptions{MaxPeers: 2}
	cases := []struct {
		name string
		size int64
		want string
	}{
		// Larger than the free space: refused before fallocate.
		{"over", 16 << 20, "the volume needs 16 MiB: "},
		// The data fits, its metadata does not: fallocate's own ENOSPC.
		{"exact", 8 << 20, "the volume needs 8 MiB plus its metadata: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".vol")
			err := createReplica("n2", path, c.size, opts)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("createReplica: %v, want ENOSPC", err)
			}
			st := status.Convert(openStatus(err))
			if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "node n2 has ") || !strings.Contains(st.Message(), c.want) {
				t.Fatalf("got %s: %q", st.Code(), st.Message())
			}
			t.Logf("%s: %s", st.Code(), st.Message())
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a partial replica file was left: %v", err)
			}
		})
	}
	if err := openStatus(errors.New("disk on fire")); status.Code(err) != codes.Internal {
		t.Fatalf("other errors: %v", err)
	}
}

// TestResyncRate: resync.rate takes the units of --size, and a value an
// older version stored without checking reads as the default (unlimited)
// with one warning, never as a garbage rate.
func TestResyncRate(t *testing.T) {
	for _, tt := range []struct {
		stored string
		want   int64
		warn   bool
	}{
		{"", 0, false},
		{"104857600", 100 << 20, false},
		{"100M", 100 << 20, false},
		{"100MiB/s", 100 << 20, false},
		{"0", 0, false},
		{"abc", 0, true},
		{"-5", 0, true},
		{"100", 0, true}, // below 64 KiB/s: a forgotten unit
	} {
		var logs bytes.Buffer
		m := &Manager{log: slog.New(slog.NewTextHandler(&logs, nil))}
		ms := &consensus.MetaState{Config: map[string]string{}}
		if tt.stored != "" {
			ms.Config["resync.rate"] = tt.stored
		}
		for range 3 {
			if got := m.resyncRate(ms); got != tt.want {
				t.Errorf("resync.rate=%q: %d bytes/s, want %d", tt.stored, got, tt.want)
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); (n == 1) != tt.warn || n > 1 {
			t.Errorf("resync.rate=%q: %d warnings, want warn=%v:\n%s", tt.stored, n, tt.warn, logs.String())
		}
		if tt.warn && !strings.Contains(logs.String(), "resync.rate") {
			t.Errorf("resync.rate=%q: the warning does not name the key:\n%s", tt.stored, logs.String())
		}
	}
}

// TestResyncRateFollowsChanges: resyncRate keeps its last parse, but a
// changed setting is parsed again, never answered from the old one.
func TestResyncRateFollowsChanges(t *testing.T) {
	m := &Manager{log: slog.New(slog.DiscardHandler)}
	ms := &consensus.MetaState{Config: map[string]string{}}
	for _, tt := range []struct {
		stored string
		want   int64
	}{{"100M", 100 << 20}, {"100M", 100 << 20}, {"200M", 200 << 20}, {"", 0}, {"abc", 0}, {"1G", 1 << 30}} {
		if tt.stored == "" {
			delete(ms.Config, "resync.rate")
		} else {
			ms.Config["resync.rate"] = tt.stored
		}
		if got := m.resyncRate(ms); got != tt.want {
			t.Fatalf("resync.rate=%q after a change: %d bytes/s, want %d", tt.stored, got, tt.want)
		}
	}
}

// TestPlainStream: only a valid replication.data_stream=plain leaves TLS;
// unset, tls, and a value that does not parse (warned about once) keep it,
// and a change is read again.
func TestPlainStream(t *testing.T) {
	var logs bytes.Buffer
	m := &Manager{log: slog.New(slog.NewTextHandler(&logs, nil))}
	ms := &consensus.MetaState{Config: map[string]string{}}
	for _, tt := range []struct {
		stored string
		want   bool
		warns  int // in all, so far
	}{
		{"", false, 0},
		{"plain", true, 0},
		{"tls", false, 0},
		{"plain", true, 0},
		{"Plain", false, 1},
		{"none", false, 2},
		{"none", false, 2},
		{" plain ", true, 2},
		{"", false, 2},
	} {
		if tt.stored == "" {
			delete(ms.Config, "replication.data_stream")
		} else {
			ms.Config["replication.data_stream"] = tt.stored
		}
		for range 3 {
			if got := m.plainStream(ms); got != tt.want {
				t.Fatalf("replication.data_stream=%q: plain %v, want %v", tt.stored, got, tt.want)
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != tt.warns {
			t.Fatalf("replication.data_stream=%q: %d warnings in all, want %d:\n%s", tt.stored, n, tt.warns, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "replication.data_stream") {
		t.Errorf("the warning does not name the key:\n%s", logs.String())
	}
	// With no metadata to read, a node keeps TLS.
	m.meta = func() Meta { return nil }
	if m.plainStreamNow() {
		t.Error("plain without metadata")
	}
}

// TestVolumeUUID: every replica of a volume derives the same ID, and
// another volume, a volume of the same name recreated (new shard) or the
// same name in another cluster gets another one.
func TestVolumeUUID(t *testing.T) {
	e := consensus.VolumeEntry{Name: "v", ShardID: 100, Replicas: []string{"n1", "n2"}}
	id := volumeUUID("c1", e)
	if id == [16]byte{} {
		t.Fatal("zero ID")
	}
	if again := volumeUUID("c1", consensus.VolumeEntry{Name: "v", ShardID: 100, Replicas: []string{"n2", "n3"}, Size: 1}); again != id {
		t.Errorf("the ID depends on more than cluster, name and shard")
	}
	for _, other := range []struct {
		cluster string
		e       consensus.VolumeEntry
	}{{"c1", consensus.VolumeEntry{Name: "w", ShardID: 100}}, {"c1", consensus.VolumeEntry{Name: "v", ShardID: 101}}, {"c2", e}} {
		if volumeUUID(other.cluster, other.e) == id {
			t.Errorf("%s/%s/%d has the ID of c1/v/100", other.cluster, other.e.Name, other.e.ShardID)
		}
	}
}

// TestPeersOf: the peers keep the catalog's order (it is the bitmap slot
// order, the same on every replica) and leave out the node itself.
func TestPeersOf(t *testing.T) {
	e := consensus.VolumeEntry{Replicas: []string{"n3", "n1", "n2"}}
	if got := peersOf(e, "n1"); strings.Join(got, ",") != "n3,n2" {
		t.Errorf("peersOf(n1) = %v", got)
	}
	if got := peersOf(e, "w"); strings.Join(got, ",") != "n3,n1,n2" {
		t.Errorf("peersOf(witness) = %v", got)
	}
}
