package testcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhci/tandem/internal/faultfs"
)

// faultDiskUnmountTimeout bounds the wait for a fault disk's FUSE server
// at Close, once every process of the cluster is dead.
const faultDiskUnmountTimeout = 30 * time.Second

// FaultDisk puts the node's data directory (sub "") or a directory inside
// it (sub "volumes": the volume files) on a fault-injecting filesystem
// served by the test process (internal/faultfs), and returns it: SetFault
// and Clear inject disk errors and slow I/O into the running node, and a
// power cut is c.Kill(n) followed by PowerLoss(), which drops every write
// tandemd had not synced. The durable data lives in <Node.Dir>/faultdisk.
//
// Call it before tandemd first starts on n: the directory must be empty,
// and processes see the mount only if started after it (`ip netns exec`
// copies the mount table when it starts a process). It stays mounted
// across restarts of tandemd and is unmounted by Close, after every
// process of the cluster is dead.
func (t *Tandem) FaultDisk(n *Node, sub string) (*faultfs.FS, error) {
	c := t.C
	if !c.owns(n) {
		return nil, fmt.Errorf("testcluster: FaultDisk: node %v is not part of this cluster", n)
	}
	if filepath.IsAbs(sub) || !filepath.IsLocal(filepath.Clean("./"+sub)) {
		return nil, fmt.Errorf("testcluster: FaultDisk: %q is not a directory inside the data directory", sub)
	}
	mnt := filepath.Join(t.DataDir(n), sub)
	backing := filepath.Join(n.Dir, "faultdisk", sub)
	for _, d := range []string{mnt, backing} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("testcluster: FaultDisk: %w", err)
		}
	}
	if ents, err := os.ReadDir(mnt); err != nil {
		return nil, fmt.Errorf("testcluster: FaultDisk: %w", err)
	} else if len(ents) > 0 {
		return nil, fmt.Errorf("testcluster: FaultDisk: %s is not empty: call FaultDisk before tandemd first starts on %s", mnt, n.Name)
	}
	// Mounts left by a test process that died before its cleanup.
	if gone, err := faultfs.UnmountStale(); err != nil {
		c.t.Logf("testcluster: FaultDisk: %v", err)
	} else if len(gone) > 0 {
		c.t.Logf("testcluster: FaultDisk: removed stale faultfs mounts %v", gone)
	}
	f, err := faultfs.Mount(context.Background(), backing, mnt, faultfs.Options{})
	if err != nil {
		return nil, fmt.Errorf("testcluster: FaultDisk on %s: %w", n.Name, err)
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.unmounts = append(c.unmounts, func() {
			ctx, cancel := context.WithTimeout(context.Background(), faultDiskUnmountTimeout)
			defer cancel()
			if err := f.Unmount(ctx); err != nil {
				c.t.Errorf("testcluster: cleanup: %v", err)
			}
		})
	}
	c.mu.Unlock()
	if closed {
		_ = f.Unmount(context.Background())
		return nil, fmt.Errorf("testcluster: FaultDisk: cluster closed")
	}
	c.t.Logf("testcluster: %s: %s is on faultfs (durable data in %s)", n.Name, mnt, backing)
	return f, nil
}
