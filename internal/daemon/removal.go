package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// revocationPoll is how often watchRevocations looks whether the metadata
// applied a change that may refuse a certificate (a local read of one
// number).
const revocationPoll = 200 * time.Millisecond

// watchRevocations cuts, whenever this node applies a change that may
// revoke a certificate accepted before (consensus.Meta.CertGeneration: a
// node removed, an export certificate revoked), the connections whose
// certificate is revoked now: those
// the TLS listeners accepted (d.conns) and Raft's, both ways. The
// handshake check alone would leave them open for as long as they last.
func (d *Daemon) watchRevocations(ctx context.Context) {
	var lastMeta *consensus.Meta
	var lastGen uint64
	t := time.NewTicker(revocationPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		meta := d.hs.meta.Load()
		if meta == nil {
			continue
		}
		gen, err := meta.CertGeneration()
		if err != nil || (meta == lastMeta && gen == lastGen) {
			continue
		}
		lastMeta, lastGen = meta, gen
		d.cutRefused(meta)
	}
}

// cutRefused closes every open connection whose peer certificate was
// revoked since (Meta.CheckRevoked: on the list, or a removed node's).
// Only a refusal by the list cuts: a check that could not read it (the
// replica stopping) leaves connections alone.
func (d *Daemon) cutRefused(meta *consensus.Meta) {
	revoked := func(leaf *x509.Certificate) error {
		err := meta.CheckRevoked(consensus.CertRef{Serial: pki.SerialHex(leaf), CommonName: leaf.Subject.CommonName, OU: pki.CertOU(leaf)})
		if errors.Is(err, consensus.ErrCertRevoked) {
			if pki.CertOU(leaf) == pki.OUNode {
				d.noticeRemovedPeer(leaf.Subject.CommonName)
			}
			return err
		}
		return nil
	}
	for _, conns := range []*pki.Conns{d.conns, d.replConns} {
		for _, chain := range conns.Recheck(func(chain []*x509.Certificate) error { return revoked(chain[0]) }) {
			d.log.Warn("connection cut: its certificate was revoked since it connected",
				"subject", chain[0].Subject.String(), "serial", pki.SerialHex(chain[0]))
		}
	}
	if n := meta.Host().RecheckRaftConns(revoked); n > 0 {
		d.log.Warn("Raft connections cut: their certificates were revoked since they connected", "connections", n)
	}
}

// onRemoval waits until this node learns, with proof, that it was removed
// (state.Removal), then closes every replication connection it accepted: a
// removed node takes no more writes for its replicas (the primaries count
// it out of date, as a node that went down). Members refuse its
// certificate, so none dials it again.
func (d *Daemon) onRemoval(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-d.st.Removal.Done():
	}
	cut := d.replConns.Recheck(func([]*x509.Certificate) error { return errors.New("this node was removed") })
	d.log.Warn("removed: replication connections closed", "connections", len(cut))
}

// removedNoticeEvery spaces the notices a member sends to one removed node
// that keeps knocking (its Raft dials alone come several times a second).
const removedNoticeEvery = 10 * time.Second

// noticeLimiter remembers when each removed node was last told.
type noticeLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// allow reports whether node may be told now, and if so notes it.
func (l *noticeLimiter) allow(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || len(l.last) > 1024 {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[node]; ok && now.Sub(t) < removedNoticeEvery {
		return false
	}
	l.last[node] = now
	return true
}

// noticeRemovedPeer tells node, whose node certificate a handshake here
// just refused, that it was removed, if the metadata says so: a node that
// was down or cut off when it was removed learns it on its next contact,
// with proof (this member's authenticated call), instead of guessing from
// refused handshakes. Asynchronous and rate-limited per node.
func (d *Daemon) noticeRemovedPeer(node string) {
	if node == d.cfg.NodeName || !d.removedNotices.allow(node, time.Now()) {
		return
	}
	go func() {
		id, meta, _ := d.cluster()
		if id == nil || meta == nil {
			return
		}
		ms, err := meta.LocalState()
		if err != nil {
			return
		}
		n, ok := ms.Nodes[node]
		if !ok || n.State != consensus.NodeRemoved {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := d.tellRemoved(ctx, *n, membership.RemovalNotice(id.ClusterID, id.ClusterName, *n))
		switch {
		case err != nil:
			d.log.Debug("removed node knocked; telling it failed", "node", node, "err", err)
		case resp.GetFirst():
			d.log.Warn("removed node knocked and was told of its removal; it stopped for good", "node", node,
				"vms_destroyed", resp.GetVmsDestroyed(), "primaries_frozen", resp.GetPrimariesFrozen())
		}
	}()
}

// tellRemoved is membership's TellRemoved: Peer NodeRemoved to node n over
// a connection of its own. n's certificate is revoked by now, so the pool's
// connections (which apply the revocation list to the server too) cannot
// reach it; this one checks the CA and that the server is node n, nothing
// more. That is enough: n is told something, never asked for anything.
func (d *Daemon) tellRemoved(ctx context.Context, n consensus.NodeRecord, req *tandemv1.PeerNodeRemovedRequest) (*tandemv1.PeerNodeRemovedResponse, error) {
	m := d.hs.tls.Load()
	if m == nil {
		return nil, errors.New("this node is not in a cluster")
	}
	cfg, err := pki.ClientTLS(m.Cert, m.Key, m.CACert)
	if err != nil {
		return nil, err
	}
	chain := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := chain(cs); err != nil {
			return err
		}
		leaf := cs.PeerCertificates[0]
		if pki.CertOU(leaf) != pki.OUNode || leaf.Subject.CommonName != n.Name {
			return fmt.Errorf("the server at %s is %q (OU %q), not node %s", n.BackendAddr, leaf.Subject.CommonName, pki.CertOU(leaf), n.Name)
		}
		return nil
	}
	cc, err := grpc.NewClient(n.BackendAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", n.BackendAddr, err)
	}
	defer cc.Close()
	return tandemv1.NewPeerClient(cc).NodeRemoved(ctx, req)
}
