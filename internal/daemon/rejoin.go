package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
)

// A node whose certificate expired while it was off starts stopped: it
// keeps its data (Raft directory, replicas), runs neither Raft nor
// replication, serves only its unix admin socket, and says why and what to
// do there (status) and in its log. 'tandem cluster rejoin' brings it back
// in the same process (membership.Manager.Rejoin, the hooks below). A
// running node cut off by certificates (left out of a CA rotation) rejoins
// the same way and takes the new material from its next handshake.

// stopped is why an initialised node does not run in its cluster.
type stopped struct {
	reason string
}

// expiredReason is why the node cannot run in its cluster with the
// material it holds, "" when it can: its node certificate expired.
func (d *Daemon) expiredReason(now time.Time) (string, error) {
	m, err := d.dir.LoadTLS()
	if err != nil {
		return "", err
	}
	_, notAfter, err := pki.RenewAt(m.Cert)
	if err != nil {
		return "", fmt.Errorf("node certificate %s: %w", d.dir.NodeCert(), err)
	}
	if now.Before(notAfter) {
		return "", nil
	}
	return fmt.Sprintf("this node's certificate expired at %s (while tandemd was not running, so it could not renew it): the members refuse it, so this node runs nothing of cluster %q (its data, Raft logs and volume replicas are kept). To bring it back: %s",
		notAfter.UTC().Format(time.RFC3339), d.id.ClusterName, membership.RejoinCommand()), nil
}

// stoppedInfo is state.State.Stopped.
func (d *Daemon) stoppedInfo() (state.Stopped, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped == nil || d.id == nil {
		return state.Stopped{}, false
	}
	return state.Stopped{ClusterName: d.id.ClusterName, ClusterID: d.id.ClusterID, Reason: d.stopped.reason}, true
}

// rejoinHooks is the daemon's side of a rejoin (membership.RejoinHooks).
type rejoinHooks struct{ d *Daemon }

func (h rejoinHooks) StoppedLocked() (membership.Identity, string, bool) {
	d := h.d
	if d.stopped == nil || d.id == nil {
		return membership.Identity{}, "", false
	}
	return *d.id, d.stopped.reason, true
}

func (h rejoinHooks) ResumeLocked(ctx context.Context, m membership.Material, view *consensus.CertView) error {
	d := h.d
	t := nodedir.TLS(m)
	if err := d.dir.ReplaceTLS(&t); err != nil {
		return fmt.Errorf("install the new certificate: %w", err)
	}
	// Set before Raft starts: its first handshakes need it.
	d.hs.view.Store(view)
	if err := d.startClusterLocked(ctx, nil, false); err != nil {
		d.hs.view.Store(nil)
		return err
	}
	if err := d.startTLSServersLocked(); err != nil {
		return err
	}
	d.stopped = nil
	go d.dropCertView(d.runCtx, view)
	return nil
}

func (h rejoinHooks) RunningLocked() (membership.Identity, bool) {
	d := h.d
	if d.stopped != nil || d.id == nil || d.meta == nil {
		return membership.Identity{}, false
	}
	return *d.id, true
}

func (h rejoinHooks) RefreshLocked(ctx context.Context, m membership.Material, view *consensus.CertView) error {
	d := h.d
	t := nodedir.TLS(m)
	if err := d.dir.ReplaceTLS(&t); err != nil {
		return fmt.Errorf("install the new certificate: %w", err)
	}
	// The view first: the next handshakes use the new material and need it.
	d.hs.view.Store(view)
	d.tls = &t
	d.hs.tls.Store(&t)
	if err := d.syncLibvirtPKI(ctx, &t); err != nil {
		d.log.Warn("libvirt TLS files not updated; live migrations may fail until tandemd restarts", "err", err)
	}
	go d.dropCertView(d.runCtx, view)
	return nil
}

func (h rejoinHooks) Resumed(context.Context) {
	d := h.d
	if id, _, _ := d.cluster(); id != nil {
		d.log.Info("tandemd runs in its cluster again", "node", d.cfg.NodeName, "cluster", id.ClusterName, "replica", id.ReplicaID)
	}
	// The volume manager lives as long as the process, not the call.
	d.vols.Restore(d.runCtx)
}

// dropCertView stops checking certificates by a rejoin's view once this
// node's metadata replica has applied what the view was read at: from then
// on its own state is at least as recent.
func (d *Daemon) dropCertView(ctx context.Context, view *consensus.CertView) {
	for {
		if meta := d.hs.meta.Load(); meta != nil {
			if ms, err := meta.LocalState(); err == nil && ms.Applied >= view.Applied {
				d.hs.view.CompareAndSwap(view, nil)
				d.log.Info("metadata caught up after the rejoin; certificates are checked by it again", "applied", ms.Applied)
				return
			}
		}
		if ctxtime.Sleep(ctx, time.Second) != nil {
			return
		}
	}
}
