package daemon

import (
	"errors"
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
