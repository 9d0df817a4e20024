package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
)

// Conns remembers the connections a TLS server accepted, with the
// certificate each peer presented, so that those a revocation now refuses
// can be cut (Recheck): the handshake check (WithCertCheck) runs once per
// connection, and a connection opened before its certificate was revoked
// would otherwise live on. A connection is remembered from Accept until
// it is closed; its certificate from the moment its handshake passed.
//
// Use: wrap the raw listener (Listener), and have the server's
// configuration report each verified handshake (Track), which needs the
// raw connection the handshake ran on: tls.ClientHelloInfo.Conn, in
// GetConfigForClient. That works for any server that runs its handshake
// on the accepted connection (gRPC's TLS credentials, tls.NewListener,
// NBD's STARTTLS).
type Conns struct {
	mu sync.Mutex
	// conns maps each open accepted connection to its peer's certificate
	// chain (nil until its handshake passed).
	conns map[net.Conn][]*x509.Certificate
}

// NewConns returns an empty registry.
func NewConns() *Conns { return &Conns{conns: map[net.Conn][]*x509.Certificate{}} }

// Listener wraps ln so that every connection it accepts is remembered
// until closed.
func (c *Conns) Listener(ln net.Listener) net.Listener { return &connsListener{Listener: ln, c: c} }

// Track wraps a server configuration returned for one handshake on the
// connection raw (tls.ClientHelloInfo.Conn): once the configuration's own
// checks pass, raw is remembered with the peer's certificates. A
// connection that did not come through Listener is not remembered (it
// could not be forgotten when it closes).
func (c *Conns) Track(cfg *tls.Config, raw net.Conn) *tls.Config {
	cfg = cfg.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) > 0 {
			c.mu.Lock()
			if _, ok := c.conns[raw]; ok {
				c.conns[raw] = cs.PeerCertificates
			}
			c.mu.Unlock()
		}
		return nil
	}
	return cfg
}

// Recheck applies check to the certificate of every open connection that
// presented one, and closes those it now refuses (a certificate revoked
// since the handshake). It returns the chains it cut, for the log.
func (c *Conns) Recheck(check func(chain []*x509.Certificate) error) [][]*x509.Certificate {
	c.mu.Lock()
	open := make(map[net.Conn][]*x509.Certificate, len(c.conns))
	for conn, chain := range c.conns {
		if chain != nil {
			open[conn] = chain
		}
	}
	c.mu.Unlock()
	// Checked without the lock: a check may read the metadata shard, and
	// closing a connection takes the lock (Close forgets it).
	var cut [][]*x509.Certificate
	for conn, chain := range open {
		if check(chain) != nil {
			conn.Close()
			cut = append(cut, chain)
		}
	}
	return cut
}

// Len is how many accepted connections are open.
func (c *Conns) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

type connsListener struct {
	net.Listener
	c *Conns
}

func (l *connsListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: conn, c: l.c}
	l.c.mu.Lock()
	l.c.conns[tc] = nil
	l.c.mu.Unlock()
	return tc, nil
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	c    *Conns
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}
