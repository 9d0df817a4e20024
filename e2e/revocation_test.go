package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// tlsAnswer dials addr from inside n's namespace presenting the PEM pair in
// certFile/keyFile, and reports what the server made of the certificate:
// nil if it kept the connection open for wait, or the error the server's
// alert produced. TLS 1.3 clients finish their handshake before the server
// has checked their certificate, so the verdict is only seen on a read.
func tlsAnswer(c *testcluster.Cluster, n *testcluster.Node, addr, certFile, keyFile string, wait time.Duration) error {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load %s: %w", certFile, err)
	}
	var verdict error
	err = c.InNetns(n, func() error {
		d := &net.Dialer{Timeout: 5 * time.Second}
		// The client's own check of the server is not what is tested here.
		conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
		if err != nil {
			verdict = err
			return nil
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return nil
				}
				verdict = err
				return nil
			}
		}
	})
	if err != nil {
		return err
	}
	return verdict
}

// checkRemovedNodeRefused: after `node remove n4`, n4's node certificate
// and its admin certificate are refused in the TLS handshake by the
// backend gRPC, Raft, replication and admin listeners of a remaining member,
// while a member's certificate still passes on the same ports.
func checkRemovedNodeRefused(t *testing.T, c *testcluster.Cluster, td *testcluster.Tandem, removed, member, from *testcluster.Node) {
	t.Helper()
	tlsFile := func(n *testcluster.Node, parts ...string) string {
		return filepath.Join(append([]string{td.DataDir(n)}, parts...)...)
	}
	ports := map[string]string{
		"backend":     td.BackendAddr(member),
		"raft":        fmt.Sprintf("%s:7401", member.IP),
		"replication": fmt.Sprintf("%s:7402", member.IP),
		"admin":       td.AdminAddr(member),
	}
	for port, addr := range ports {
		// A member's certificate: the server keeps the connection open.
		if err := tlsAnswer(c, from, addr, tlsFile(from, "tls", "node.crt"), tlsFile(from, "tls", "node.key"), time.Second); err != nil {
			t.Errorf("%s port %s refused member %s: %v", port, addr, from.Name, err)
		}
		for _, cred := range []struct{ what, cert, key string }{
			{"node certificate", tlsFile(removed, "tls", "node.crt"), tlsFile(removed, "tls", "node.key")},
			{"admin certificate", tlsFile(removed, "admin", "admin.crt"), tlsFile(removed, "admin", "admin.key")},
		} {
			// Generous wait: a refusal arrives at once, an acceptance never.
			err := tlsAnswer(c, removed, addr, cred.cert, cred.key, 15*time.Second)
			if err == nil || !strings.Contains(err.Error(), "bad certificate") {
				t.Errorf("%s port %s accepted removed node %s's %s (err=%v)", port, addr, removed.Name, cred.what, err)
			}
		}
	}
}

// h2Preface is what an HTTP/2 client sends first: the preface and an empty
// SETTINGS frame. gRPC servers answer with their own SETTINGS.
var h2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// heldConn is a TLS connection to a gRPC port, opened from inside a
// node's namespace and kept open.
type heldConn struct {
	what string
	conn *tls.Conn
}

// holdGRPC opens a TLS connection from n to the gRPC port addr presenting
// the PEM pair, speaks the HTTP/2 preface and waits for the server's
// answer: the server accepted the certificate and serves the connection.
func holdGRPC(c *testcluster.Cluster, n *testcluster.Node, what, addr, certFile, keyFile string) (*heldConn, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certFile, err)
	}
	var conn *tls.Conn
	err = c.InNetns(n, func() error {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := conn.Write(h2Preface); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// Generous: an answer arrives at once, a refusal as an error.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Read(make([]byte, 64)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: the server did not answer: %w", what, err)
	}
	return &heldConn{what: what, conn: conn}, nil
}

// cut says whether the server closed the connection: it reads (discarding
// what the server still sends) until an error, for at most wait, which is
// generous; a connection still open then is not cut.
func (h *heldConn) cut(wait time.Duration) error {
	defer h.conn.Close()
	_ = h.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	for {
		_, err := h.conn.Read(buf)
		switch {
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("%s: still open %s after the revocation", h.what, wait)
		default:
			return nil
		}
	}
}
