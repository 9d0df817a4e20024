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
// starts or stops.
type handshakeState struct {
	meta atomic.Pointer[consensus.Meta]
	tls  atomic.Pointer[nodedir.TLS]
}

// certCheck applies the cluster's revocation list (consensus.Meta.CheckCert)
// to a peer's certificate during a handshake, in both directions. With no
// metadata replica running (start-up, an aborted join, an expected-votes
// override) nothing can be checked, so nothing is accepted.
func (d *Daemon) certCheck(leaf *x509.Certificate) error {
	meta := d.hs.meta.Load()
	if meta == nil {
		return errors.New("the metadata replica is not running, so the revocation list cannot be checked")
	}
	return meta.CheckCert(consensus.CertRef{Serial: pki.SerialHex(leaf), CommonName: leaf.Subject.CommonName, OU: pki.CertOU(leaf)})
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
