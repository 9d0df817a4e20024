package api

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// The daemon's own user gets through, and peerUID reads who connected.
func TestLocalOnlyAcceptsOwnUser(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l := LocalOnly(ln, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uid, err := peerUID(s)
	if err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("peer uid %d, %v; want %d", uid, err, os.Getuid())
	}
}
