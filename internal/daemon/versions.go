package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/version"
)

// recordVersion records, once per start, the release and protocol level
// this tandemd runs in its NodeRecord (consensus.Meta.RecordVersion), so
// that node list, cluster status and upgrade-status know them even while
// the node is down, and so that the cluster version can rise once every
// node runs a newer release. It waits for the node to be in a cluster
// (create and join happen after Run) and retries until the metadata shard
// takes it or ctx ends.
func (d *Daemon) recordVersion(ctx context.Context) {
	ver, level := version.String(), version.ProtocolLevel()
	wait := time.Second
	for {
		meta := d.hs.meta.Load()
		if meta == nil {
			wait = time.Second // not in a cluster yet: look again soon
		} else {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := meta.RecordVersion(pctx, d.cfg.NodeName, ver, level)
			cancel()
			switch {
			case err == nil:
				d.log.Info("version recorded", "version", ver, "protocol", level)
				return
			case errors.Is(err, consensus.ErrFeatureGated):
				// A release older than the cluster version: it must not
				// take part (its replica stops at the first entry it does
				// not know). Say so once, loudly; retrying cannot help.
				d.log.Error("this release is older than the cluster version: install a newer one", "version", ver, "protocol", level, "err", err)
				return
			case ctx.Err() != nil:
				return
			default:
				d.log.Debug("recording this node's version, will retry", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
