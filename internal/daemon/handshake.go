package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/pki"
)

// handshakeState is what TLS callbacks read, set whenever the Raft host
// starts or stops and when a certificate is renewed.
type handshakeState struct {
	meta atomic.Pointer[consensus.Meta]
	tls  atomic.Pointer[nodedir.TLS]
	// server and client cache the configurations built from tls.
	server, client atomic.Pointer[builtTLS]
	// view, set by a rejoin until this node's metadata caught up, is what
	// the peers' certificates are checked by meanwhile (rejoin.go).
	view atomic.Pointer[consensus.CertView]
}

// currentClientTLS is pki.ClientTLS of the node's current material with
// the revocation check, rebuilt only when the material changes.
func (d *Daemon) currentClientTLS() (*tls.Config, error) {
	return d.built(&d.hs.client, pki.ClientTLS)
}

// serverTLS is the server configuration of the node's current material
// with the revocation check, rebuilt only when the material changes.
func (d *Daemon) serverTLS() (*tls.Config, error) {
	return d.built(&d.hs.server, pki.ServerTLS)
}

type builtTLS struct {
	from *nodedir.TLS
	cfg  *tls.Config
}

// built returns the configuration cached in slot for the node's current
// material, building it with build (plus the revocation check) when the
// material changed since.
func (d *Daemon) built(slot *atomic.Pointer[builtTLS], build func(cert, key, ca []byte) (*tls.Config, error)) (*tls.Config, error) {
	m := d.hs.tls.Load()
	if m == nil {
		return nil, errors.New("node is not in a cluster")
	}
	if b := slot.Load(); b != nil && b.from == m {
		return b.cfg, nil
	}
	cfg, err := build(m.Cert, m.Key, m.CACert)
	if err != nil {
		return nil, err
	}
	cfg = pki.WithCertCheck(cfg, d.certCheck)
	slot.Store(&builtTLS{from: m, cfg: cfg})
	return cfg, nil
}

// dynamicServerTLS is a listener's configuration that picks the node's
// current certificate on every handshake (renewal needs no restart) and
// remembers each connection in conns. alpn is what the listener speaks
// (gRPC needs "h2").
func (d *Daemon) dynamicServerTLS(conns *pki.Conns, alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: alpn,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg, err := d.serverTLS()
			if err != nil {
				return nil, err
			}
			// Track clones cfg; the connection is remembered with its
			// peer's certificate so a later revocation can cut it.
			cfg = conns.Track(cfg, hello.Conn)
			if len(alpn) > 0 {
				cfg.NextProtos = alpn
			}
			return cfg, nil
		},
	}
}

// certCheck applies the cluster's revocation list (consensus.Meta.CheckCert)
// to a peer's certificate during a handshake, in both directions. With no
// metadata replica running (start-up, an aborted join, an expected-votes
// override) nothing can be checked, so nothing is accepted.
func (d *Daemon) certCheck(leaf *x509.Certificate) error {
	ref := consensus.CertRef{Serial: pki.SerialHex(leaf), CommonName: leaf.Subject.CommonName, OU: pki.CertOU(leaf)}
	// After a rejoin this node's replica is behind: it would refuse the
	// certificates its peers renewed while it was off. The admitting
	// member's view is newer until the replica has caught up with it.
	if v := d.hs.view.Load(); v != nil {
		return v.CheckCert(ref)
	}
	meta := d.hs.meta.Load()
	if meta == nil {
		return errors.New("the metadata replica is not running, so the revocation list cannot be checked")
	}
	err := meta.CheckCert(ref)
	if errors.Is(err, consensus.ErrCertRevoked) && pki.CertOU(leaf) == pki.OUNode {
		// A removed node knocking learns why (with proof) instead of
		// guessing from the refusal.
		d.noticeRemovedPeer(leaf.Subject.CommonName)
	}
	return err
}

// raftPeerCheck admits only other nodes to Raft: an admin or export
// certificate of the same CA has no business there.
func (d *Daemon) raftPeerCheck(leaf *x509.Certificate) error {
	if ou := pki.CertOU(leaf); ou != pki.OUNode {
		return fmt.Errorf("only node certificates may speak Raft, not %q", ou)
	}
	return d.certCheck(leaf)
}

// raftServerTLS is asked for on every Raft connection this node accepts,
// so it uses the node's current certificate and CA.
func (d *Daemon) raftServerTLS() (*tls.Config, error) {
	m := d.hs.tls.Load()
	if m == nil {
		return nil, errors.New("no TLS material loaded")
	}
	cfg, err := pki.ServerTLS(m.Cert, m.Key, m.CACert)
	if err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return pki.WithCertCheck(cfg, d.raftPeerCheck), nil
}

// raftClientTLS is asked for on every Raft dial.
func (d *Daemon) raftClientTLS() (*tls.Config, error) {
	m := d.hs.tls.Load()
	if m == nil {
		return nil, errors.New("no TLS material loaded")
	}
	cfg, err := pki.ClientTLS(m.Cert, m.Key, m.CACert)
	if err != nil {
		return nil, err
	}
	return pki.WithCertCheck(cfg, d.raftPeerCheck), nil
}
