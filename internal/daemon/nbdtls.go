package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"

	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/pki"
)

// nbdTLS is the TCP NBD export's TLS configuration: the node certificate
// as the server's, and client certificates required and verified against
// the cluster CA. It is built per handshake from the node's current TLS
// material (cached while that is unchanged), so a node that joins or
// renews its certificate serves with it without a restart; a node in no
// cluster fails every handshake.
type nbdTLS struct {
	material func() *nodedir.TLS
	check    pki.CertCheck
	// conns remembers each verified connection (nil: none), so a revoked
	// export certificate loses the connections it opened.
	conns *pki.Conns

	mu   sync.Mutex
	from *nodedir.TLS
	cfg  *tls.Config
}

func (n *nbdTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// nbd.ServeTLS checks the chain verified whatever this returns.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg, err := n.forClient()
			if err != nil || n.conns == nil {
				return cfg, err
			}
			return n.conns.Track(cfg, hello.Conn), nil
		},
	}
}

func (n *nbdTLS) forClient() (*tls.Config, error) {
	m := n.material()
	if m == nil {
		return nil, errors.New("this node is not in a cluster")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.from == m {
		return n.cfg, nil
	}
	cfg, err := pki.ServerTLS(m.Cert, m.Key, m.CACert)
	if err != nil {
		return nil, fmt.Errorf("nbd TLS: %w", err)
	}
	// Unlike the gRPC servers (where a joining node has no certificate
	// yet), every NBD client must present one from the cluster CA.
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	// A revoked certificate (the cluster's revocation list) fails the
	// handshake: it never reaches an export list or an export.
	if n.check != nil {
		cfg = pki.WithCertCheck(cfg, n.check)
	}
	n.from, n.cfg = m, cfg
	return cfg, nil
}

// newNBDServer is the NBD server of the unix socket (plain: the VMs of
// this node) and, when nbd_addr is set, of the TCP export (TLS only,
// authorized per volume by the client's certificate).
func (d *Daemon) newNBDServer() *nbd.Server {
	t := &nbdTLS{material: func() *nodedir.TLS { _, _, m := d.cluster(); return m }, check: d.certCheck, conns: d.conns}
	return nbd.NewServer(d.log.With("component", "nbd"), d.vols.Export,
		nbd.WithTLS(t.config()), nbd.WithAuthorize(d.vols.AuthorizeNBD), nbd.WithList(d.vols.ListNBD))
}
