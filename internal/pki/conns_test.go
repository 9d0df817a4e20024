package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// A connection accepted before its certificate was refused is cut by
// Recheck; another one stays open and keeps working.
func TestConnsRecheckCutsRefused(t *testing.T) {
	c := newCluster(t, "lab")
	conns := NewConns()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := c.serverTLS(t)
	ln := tls.NewListener(conns.Listener(raw), &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			return conns.Track(srvCfg, hello.Conn), nil
		},
	})
	defer ln.Close()
	go func() { // an echo server
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	dial := func(name string) *tls.Conn {
		cert, key := mustNode(t, c.ca, name, time.Now())
		conn, err := tls.Dial("tcp", raw.Addr().String(), c.clientTLS(t, cert, key))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		echo(t, conn) // the server verified the certificate: it answered
		return conn
	}
	member, removed := dial("node-b"), dial("node-x")
	if n := conns.Len(); n != 2 {
		t.Fatalf("%d connections remembered, want 2", n)
	}

	if cut := conns.Recheck(func([]*x509.Certificate) error { return nil }); len(cut) != 0 {
		t.Fatalf("nothing refused, yet %d cut", len(cut))
	}
	cut := conns.Recheck(func(chain []*x509.Certificate) error {
		if chain[0].Subject.CommonName == "node-x" {
			return errors.New("revoked")
		}
		return nil
	})
	if len(cut) != 1 || cut[0][0].Subject.CommonName != "node-x" {
		t.Fatalf("cut %d connections, want node-x's alone", len(cut))
	}
	// The server closed it: the read sees the end, without waiting.
	if _, err := removed.Read(make([]byte, 1)); err == nil {
		t.Fatal("the refused certificate's connection still delivers data")
	}
	echo(t, member)
	if n := conns.Len(); n != 1 {
		t.Errorf("%d connections remembered after the cut, want 1", n)
	}
}

// A connection accepted outside Listener is never remembered (it could not
// be forgotten when it closes).
func TestConnsTrackIgnoresUnknownConn(t *testing.T) {
	c := newCluster(t, "lab")
	conns := NewConns()
	r := handshake(t, conns.Track(c.serverTLS(t), nil), c.clientTLS(t, c.srvCert, c.srvKey))
	if err := r.ok(); err != nil {
		t.Fatal(err)
	}
	if n := conns.Len(); n != 0 {
		t.Fatalf("%d connections remembered, want 0", n)
	}
}

func echo(t *testing.T, conn *tls.Conn) {
	t.Helper()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}
