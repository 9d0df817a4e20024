package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// LocalOnly wraps the admin unix socket's listener so that it accepts only
// connections from root or the daemon's own user (SO_PEERCRED). The socket
// file is 0600 too; this also covers the moment between bind and chmod and
// a data dir with loose permissions. Calls over it without a token are the
// node's local admin, so this check is what makes that safe.
func LocalOnly(ln net.Listener, log *slog.Logger) net.Listener {
	return &localListener{Listener: ln, uid: uint32(os.Getuid()), log: log}
}

type localListener struct {
	net.Listener
	uid uint32
	log *slog.Logger
}

func (l *localListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && (uid == 0 || uid == l.uid) {
			return c, nil
		}
		l.log.Warn("admin socket connection refused", "uid", uid, "err", err)
		c.Close()
	}
}

// peerUID is the user ID of the process at the other end of a unix socket.
func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred.Uid, nil
}
