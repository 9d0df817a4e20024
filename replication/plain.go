package replication

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// A plain data stream (Hello.Plain, HelloAck.Plain) keeps the mutually
// authenticated TLS handshake and the Hello/HelloAck exchange, so the
// sender's identity, the volume, its epoch and its ID are checked as
// always, and then carries the frames unencrypted on the TCP connection
// under the TLS session, as DRBD does on a dedicated backend network. It
// saves the AES-GCM of every byte (profiles of 1 MiB sequential writes put
// it at 28-30% of each node's CPU) and gives up confidentiality and
// integrity against anyone on the path: only for a trusted, dedicated
// network.
//
// Why no byte is lost or misread at the switch: a tls.Conn reads ahead of
// what it returns (whole records, and whatever the socket had), so a byte
// the peer sent unencrypted after its last TLS message could be swallowed
// by the TLS layer. The protocol leaves nothing to swallow:
//   - the primary sends its Hello and nothing else until it has read the
//     HelloAck (Primary.connectAck: the connection is nobody else's until
//     then), so when the secondary has read the Hello, nothing follows it
//     yet;
//   - the secondary sends the HelloAck and nothing else until the
//     primary's first frame has arrived (it only ever answers frames), so
//     when the primary has read the HelloAck, nothing follows it yet;
//   - TLS 1.3 session tickets, the only post-handshake message a Go
//     server sends unasked, are sent during the server's handshake, before
//     the HelloAck: the primary's TLS layer consumes them while reading it.
//
// leaveTLS checks it anyway (a violation is an error, never a corrupt
// stream), and the secondary checks that its bufio.Reader holds nothing
// past the Hello. After the switch the tls.Conn is never used again, not
// even closed: its Close would write a close_notify alert into the plain
// stream; the connection under it is closed instead.

// leaveTLS returns the connection under tc, to go on unencrypted, after
// making sure that tc read nothing ahead of the peer's last TLS message:
// a record already in its buffers would be lost to the plain stream. It
// reads tc with a read deadline in the past, which touches no socket:
// anything it returns was buffered. A record only partly read cannot be
// seen this way; the plain stream would then start inside it and fail its
// first frame's magic, an error too.
func leaveTLS(tc *tls.Conn) (net.Conn, error) {
	raw := tc.NetConn()
	if err := raw.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil, fmt.Errorf("leave TLS: %w", err)
	}
	var b [1]byte
	n, err := tc.Read(b[:])
	if derr := raw.SetReadDeadline(time.Time{}); derr != nil {
		return nil, fmt.Errorf("leave TLS: %w", derr)
	}
	switch {
	case n > 0 || err == nil:
		return nil, fmt.Errorf("%w: the TLS layer holds data read ahead at the switch to a plain stream", ErrBadFrame)
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("leave TLS: %w", err)
	}
	return raw, nil
}

// streamOf names the data stream a connection carries frames in.
func streamOf(c net.Conn, plain bool) string {
	if plain {
		return StreamPlain
	}
	if _, ok := c.(*tls.Conn); ok {
		return StreamTLS
	}
	return "" // a Dialer or listener of the caller's; not known here
}

// closeUnder closes the connection under c's TLS session, if it has one,
// without a close_notify: for a peer that has left TLS.
func closeUnder(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	c.Close()
}
