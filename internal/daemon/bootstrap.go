package daemon

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
)

func (d *Daemon) roleName() string {
	if d.cfg.Role == "witness" {
		return "witness"
	}
	return "data"
}

// abortInitLocked undoes a create or join that failed before the identity
// was written, so the node can try again from scratch.
func (d *Daemon) abortInitLocked() {
	if d.peers != nil {
		d.peers.Close()
		d.peers = nil
	}
	if d.host != nil {
		d.host.Close()
	}
	d.host, d.meta, d.id, d.tls = nil, nil, nil, nil
	d.hs.meta.Store(nil)
	d.hs.tls.Store(nil)
	// Errors are ignored: the create or join is failing already.
	_ = d.dir.RemoveInit()
}

// requireQuorum refuses mutations when no majority is reachable.
func (d *Daemon) requireQuorum(ctx context.Context) error {
	_, meta, _ := d.cluster()
	if meta == nil {
		return status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	qctx, cancel := context.WithTimeout(ctx, d.quorumTimeout())
	defer cancel()
	if err := meta.Host().CheckQuorum(qctx, consensus.MetaShardID); err != nil {
		return metaError(err)
	}
	return nil
}

// quorumTimeout covers one election after a leader loss, with room to spare.
func (d *Daemon) quorumTimeout() time.Duration {
	r := d.cfg.Raft
	t := time.Duration(r.RTTMillisecond*r.ElectionRTT*8) * time.Millisecond
	if t < 1500*time.Millisecond {
		t = 1500 * time.Millisecond
	}
	return t
}

// metaError maps consensus errors to API status codes (apierr.FromMeta).
func metaError(err error) error { return apierr.FromMeta(err) }
