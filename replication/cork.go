package replication

import (
	"net"
	"sync"
)

// CorkConn wraps the network connection under a TLS session so that the
// primary can send a batch of frames in a few large writes: crypto/tls
// writes every record (at most 16 KiB) with a syscall of its own, 64
// syscalls and as many trips through the network stack per MiB.
//
// While corked, writes are copied into a buffer that goes out whenever it
// reaches corkLimit and at Uncork. Uncorked, writes pass straight through,
// so the TLS handshake and alerts are never held back. A plain data stream
// (plain.go) writes its frames here directly, batched the same way.
type CorkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

const corkLimit = 256 << 10

// NewCorkConn wraps c.
func NewCorkConn(c net.Conn) *CorkConn { return &CorkConn{Conn: c} }

// Write buffers p while corked, else writes it.
func (c *CorkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) < corkLimit {
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Cork starts holding writes back.
func (c *CorkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was held back and lets later writes pass.
func (c *CorkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *CorkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// corker is a connection that can batch writes (CorkConn), found on the
// connection itself or under its TLS layer.
type corker interface {
	Cork()
	Uncork() error
}

func corkerOf(c net.Conn) corker {
	if k, ok := c.(corker); ok {
		return k
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		if k, ok := nc.NetConn().(corker); ok {
			return k
		}
	}
	return nil
}
