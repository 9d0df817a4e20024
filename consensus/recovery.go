package consensus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/tools"
)

// ExportSnapshot writes a snapshot of this replica's state machine under dir
// and returns the directory that holds it. It is local: no quorum needed.
func (h *Host) ExportSnapshot(ctx context.Context, shardID uint64, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("snapshot export dir: %w", err)
	}
	idx, err := h.nhOf(shardID).SyncRequestSnapshot(ctx, shardID, dragonboat.SnapshotOption{Exported: true, ExportPath: dir})
	if err != nil {
		return "", fmt.Errorf("export snapshot of shard %d: %w", shardID, err)
	}
	snap := filepath.Join(dir, fmt.Sprintf("snapshot-%016X", idx))
	if _, err := os.Stat(snap); err != nil {
		return "", fmt.Errorf("exported snapshot of shard %d at index %d not found: %w", shardID, idx, err)
	}
	return snap, nil
}

// ForceMembership rewrites this host's copy of a shard so that its history
// is the exported snapshot in snapDir and its only members are members. It
// is the last resort when a majority is lost for good: proposals newer than
// the snapshot are dropped, and the replicas left out must never be started
// again with their old data. The host must be closed (cfg is the config it
// ran with).
func ForceMembership(cfg HostConfig, snapDir string, members map[uint64]string, replicaID uint64) error {
	cfg.withDefaults()
	if _, ok := members[replicaID]; !ok {
		return fmt.Errorf("replica %d must be one of the new members", replicaID)
	}
	if err := tools.ImportSnapshot(nodeHostConfig(cfg, cfg.Dir, cfg.RTTMillisecond), snapDir, members, replicaID); err != nil {
		return fmt.Errorf("import snapshot %s: %w", snapDir, err)
	}
	return nil
}
