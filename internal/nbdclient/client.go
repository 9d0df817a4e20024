package nbdclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	magicNBD          = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHave        = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply     = 0x0003e889045565a9
	magicRequest      = 0x25609513
	magicSimpleReply  = 0x67446698
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
	optGo             = 7
	repAck            = 1
	repInfo           = 3
	repFlagError      = 1 << 31
	infoExport        = 0

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	// FlagFUA asks for a durable write.
	FlagFUA = 1 << 0
)

// ErrServer is an NBD error reply; Errno holds the code.
type ErrServer struct{ Errno uint32 }

func (e *ErrServer) Error() string { return fmt.Sprintf("nbd: server error %d", e.Errno) }

// Client is one NBD connection. Requests may be issued concurrently.
type Client struct {
	conn net.Conn
	size uint64

	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*call
	err     error
	done    chan struct{}
}

type call struct {
	buf []byte // read destination
	ch  chan error
}

// Dial connects to a unix socket path or a TCP host:port and opens export.
func Dial(ctx context.Context, network, addr, export string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := &Client{conn: conn, bw: bufio.NewWriterSize(conn, 1<<20), pending: map[uint64]*call{}, done: make(chan struct{})}
	br := bufio.NewReaderSize(conn, 1<<20)
	if err := c.handshake(br, export); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	go c.readLoop(br)
	return c, nil
}

func (c *Client) handshake(br *bufio.Reader, export string) error {
	var hdr [18]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("nbd: greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hdr[0:]) != magicNBD || binary.BigEndian.Uint64(hdr[8:]) != magicIHave {
		return errors.New("nbd: not a newstyle NBD server")
	}
	if binary.BigEndian.Uint16(hdr[16:])&flagFixedNewstyle == 0 {
		return errors.New("nbd: server lacks fixed newstyle")
	}
	var b []byte
	b = binary.BigEndian.AppendUint32(b, flagFixedNewstyle|flagNoZeroes)
	payload := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	payload = append(payload, export...)
	payload = binary.BigEndian.AppendUint16(payload, 0) // no info requests
	b = binary.BigEndian.AppendUint64(b, magicIHave)
	b = binary.BigEndian.AppendUint32(b, optGo)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("nbd: option: %w", err)
	}
	for {
		var rh [20]byte
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			return fmt.Errorf("nbd: option reply: %w", err)
		}
		if binary.BigEndian.Uint64(rh[0:]) != magicOptReply {
			return errors.New("nbd: bad option reply magic")
		}
		typ := binary.BigEndian.Uint32(rh[12:])
		n := binary.BigEndian.Uint32(rh[16:])
		if n > 1<<20 {
			return errors.New("nbd: option reply too large")
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(br, data); err != nil {
			return fmt.Errorf("nbd: option reply: %w", err)
		}
		switch {
		case typ&repFlagError != 0:
			return fmt.Errorf("nbd: export %q refused: %s", export, data)
		case typ == repInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == infoExport:
			c.size = binary.BigEndian.Uint64(data[2:])
		case typ == repAck:
			return nil
		}
	}
}

// Size is the export size.
func (c *Client) Size() uint64 { return c.size }

func (c *Client) readLoop(br *bufio.Reader) {
	var err error
	defer func() {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		for h, cl := range c.pending {
			cl.ch <- fmt.Errorf("nbd: connection lost: %w", err)
			delete(c.pending, h)
		}
		c.mu.Unlock()
		close(c.done)
	}()
	for {
		var rh [16]byte
		if _, err = io.ReadFull(br, rh[:]); err != nil {
			return
		}
		if binary.BigEndian.Uint32(rh[0:]) != magicSimpleReply {
			err = errors.New("nbd: bad reply magic")
			return
		}
		errno := binary.BigEndian.Uint32(rh[4:])
		handle := binary.BigEndian.Uint64(rh[8:])
		c.mu.Lock()
		cl, ok := c.pending[handle]
		delete(c.pending, handle)
		c.mu.Unlock()
		if !ok {
			err = fmt.Errorf("nbd: reply for unknown handle %d", handle)
			return
		}
		if errno == 0 && cl.buf != nil {
			if _, err = io.ReadFull(br, cl.buf); err != nil {
				cl.ch <- err
				return
			}
		}
		if errno != 0 {
			cl.ch <- &ErrServer{Errno: errno}
		} else {
			cl.ch <- nil
		}
	}
}

func (c *Client) do(ctx context.Context, cmd uint16, flags uint16, off uint64, length uint32, data, read []byte) error {
	cl := &call{buf: read, ch: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("nbd: connection lost: %w", err)
	}
	c.next++
	h := c.next
	c.pending[h] = cl
	c.mu.Unlock()
	var b [28]byte
	binary.BigEndian.PutUint32(b[0:], magicRequest)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], cmd)
	binary.BigEndian.PutUint64(b[8:], h)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	c.wmu.Lock()
	_, err := c.bw.Write(b[:])
	if err == nil && data != nil {
		_, err = c.bw.Write(data)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.conn.Close()
		return fmt.Errorf("nbd: send: %w", err)
	}
	select {
	case err := <-cl.ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WriteAt writes p at off; it returns nil only when the server acknowledged it.
func (c *Client) WriteAt(ctx context.Context, p []byte, off uint64, flags uint16) error {
	return c.do(ctx, cmdWrite, flags, off, uint32(len(p)), p, nil)
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(ctx context.Context, p []byte, off uint64) error {
	return c.do(ctx, cmdRead, 0, off, uint32(len(p)), nil, p)
}

// Flush asks the server to make completed writes durable.
func (c *Client) Flush(ctx context.Context) error {
	return c.do(ctx, cmdFlush, 0, 0, 0, nil, nil)
}

// Close disconnects politely, then closes the socket.
func (c *Client) Close() error {
	c.wmu.Lock()
	var b [28]byte
	binary.BigEndian.PutUint32(b[0:], magicRequest)
	binary.BigEndian.PutUint16(b[6:], cmdDisc)
	_, _ = c.bw.Write(b[:])
	_ = c.bw.Flush()
	c.wmu.Unlock()
	return c.conn.Close()
}
