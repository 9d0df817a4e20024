package nbd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/batchwrite"
	"github.com/tandemhci/tandem/internal/workers"
)

// conn is one connection in the transmission phase. A single reader
// goroutine parses requests (and whole WRITE payloads) in order; volume
// calls run on pooled workers, one request each, bounded by lim; replies
// are batched by bw (one syscall carries every reply that became ready
// while the previous one was being written).
type conn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	exp *export
	log *slog.Logger
	lim *limiter
	wg  sync.WaitGroup // requests handed to workers
	wp  *workers.Pool

	bw *batchwrite.Writer // sticky error: once a reply failed the socket is dead

	inflight atomic.Int32 // requests handed to workers and not yet replied to

	// coalesce: the stream is TLS, where each Write is at least one record
	// and no writev exists, so small READ replies go out as one buffer.
	coalesce bool
}

// maxCoalesce is the largest READ payload copied behind its reply header
// so both fit one TLS record (16 KiB of plaintext); larger replies span
// several records anyway.
const maxCoalesce = 16<<10 - simpleReplyLen

func newConn(s *Server, nc net.Conn, hs handshakeResult, log *slog.Logger) *conn {
	return &conn{
		s:   s,
		nc:  nc,
		br:  hs.br,
		exp: hs.exp,
		log: log,
		lim: newLimiter(s.cfg.maxInflight, s.cfg.maxInflightBytes),
		bw:  batchwrite.New(nc),
		wp:  workers.New(),

		coalesce: hs.tc != nil,
	}
}

// serve runs the transmission phase. ctx ending means the server is
// stopping: reading stops at once, in-flight requests get the shutdown
// grace to finish, then their context is cancelled.
func (c *conn) serve(ctx context.Context) {
	opCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	defer c.wp.Close()
	c.log.Info("nbd: client connected", "size", c.exp.size, "read_only", c.exp.readOnly)
	why := c.readLoop(ctx, opCtx)
	c.drain(ctx, cancelOps)
	c.log.Info("nbd: client disconnected", "reason", why)
}

// readLoop reads and dispatches requests until the client disconnects, the
// stream breaks or ctx ends, and says why it stopped.
func (c *conn) readLoop(ctx, opCtx context.Context) string {
	var hbuf [requestHeaderLen]byte
	for ctx.Err() == nil { // requests still buffered when stopping are dropped
		req, err := readRequest(c.br, &hbuf)
		if err != nil {
			return c.readFailed(ctx, "request header", err)
		}
		if req.Type == cmdDisc {
			c.s.st.discs.Add(1)
			return "client sent NBD_CMD_DISC"
		}
		c.count(req)
		errno := c.check(req)
		if errno != 0 || c.trivial(req) {
			// Answered without the volume; a WRITE's payload is still
			// consumed so the next header parses.
			if req.Type == cmdWrite && req.Length > 0 {
				if _, err := io.CopyN(io.Discard, c.br, int64(req.Length)); err != nil {
					return c.readFailed(ctx, "write payload", err)
				}
			}
			if errno != 0 {
				c.log.Debug("nbd: request refused", "cmd", cmdName(req.Type), "flags", req.Flags,
					"offset", req.Offset, "length", req.Length, "errno", errno)
			}
			c.reply(req.Handle, errno, nil)
			continue
		}
		var weight int64
		if req.Type == cmdRead || req.Type == cmdWrite {
			weight = int64(req.Length)
		}
		weight, ok := c.lim.acquire(ctx, weight)
		if !ok {
			return "server shutting down"
		}
		var payload []byte
		if req.Type == cmdWrite {
			payload = c.s.bufs.Get(int(req.Length))
			if _, err := io.ReadFull(c.br, payload); err != nil {
				c.s.bufs.Put(payload)
				c.lim.release(weight)
				return c.readFailed(ctx, "write payload", err)
			}
		}
		more := c.br.Buffered() >= requestHeaderLen
		c.wg.Add(1)
		c.inflight.Add(1)
		c.wp.Go(func() { c.do(opCtx, req, payload, weight, more) })
	}
	return "server shutting down"
}

// readFailed classifies a read error that ends the connection.
func (c *conn) readFailed(ctx context.Context, what string, err error) string {
	switch {
	case ctx.Err() != nil:
		return "server shutting down"
	case what == "request header" && errors.Is(err, io.EOF):
		return "client hung up"
	case errors.Is(err, errBadMagic), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		c.s.st.proto.Add(1)
		c.log.Warn("nbd: malformed "+what+"; closing connection", "err", err)
		return "protocol error"
	}
	return "read " + what + ": " + err.Error()
}

func (c *conn) count(req request) {
	st := &c.s.st
	switch req.Type {
	case cmdRead:
		st.reads.Add(1)
	case cmdWrite:
		st.writes.Add(1)
	case cmdFlush:
		st.flushes.Add(1)
	case cmdTrim:
		st.trims.Add(1)
	case cmdWriteZeroes:
		st.zeroes.Add(1)
	case cmdCache:
		st.caches.Add(1)
	default:
		st.other.Add(1)
	}
}

// check validates a request against the export before anything touches
// the volume, returning the NBD error to reply with, or 0.
func (c *conn) check(req request) uint32 {
	// FUA is accepted (and ignored where meaningless) on every command:
	// clients are known to set it loosely.
	allowed := cmdFlagFUA
	switch req.Type {
	case cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdCache:
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole
	default:
		return errInval // includes BLOCK_STATUS: no metadata contexts
	}
	if req.Flags&^allowed != 0 {
		return errInval
	}
	if (req.Type == cmdRead || req.Type == cmdWrite) && req.Length > c.exp.maxBlock {
		return errInval
	}
	writes := req.Type == cmdWrite || req.Type == cmdWriteZeroes || req.Type == cmdTrim
	if writes && c.exp.readOnly {
		return errPerm
	}
	if req.Type == cmdFlush {
		return 0 // offset and length are reserved; tolerate junk in them
	}
	if req.Offset > c.exp.size || uint64(req.Length) > c.exp.size-req.Offset {
		if req.Type == cmdWrite || req.Type == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	}
	if req.Type == cmdRead && req.Length == 0 {
		return errInval
	}
	return 0
}

// trivial reports valid requests that succeed without calling the volume:
// empty writes and trims, CACHE (our volumes cache on their own), and FLUSH
// on a read-only export (this client cannot have written anything).
func (c *conn) trivial(req request) bool {
	switch req.Type {
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		return req.Length == 0
	case cmdCache:
		return true
	case cmdFlush:
		return c.exp.readOnly
	}
	return false
}

// do runs one request against the volume and replies.
// more says another request was already buffered behind this one.
func (c *conn) do(ctx context.Context, req request, payload []byte, weight int64, more bool) {
	defer c.wg.Done()
	defer c.lim.release(weight)
	vol := c.exp.vol
	off := int64(req.Offset) // check bounded it by the size, an int64
	var data []byte
	var err error
	switch req.Type {
	case cmdRead:
		buf := c.s.bufs.Get(int(req.Length))
		defer c.s.bufs.Put(buf)
		var n int
		n, err = vol.ReadAt(ctx, buf, off)
		if n == len(buf) && (err == nil || errors.Is(err, io.EOF)) {
			err, data = nil, buf
		} else if err == nil {
			err = io.ErrUnexpectedEOF // never send a buffer the volume did not fill
		}
	case cmdWrite:
		var n int
		wf := writeFlags(req.Flags)
		if more {
			wf |= blockstore.More
		}
		n, err = vol.WriteAt(ctx, payload, off, wf)
		if err == nil && n < len(payload) {
			err = io.ErrShortWrite
		}
		c.s.bufs.Put(payload)
	case cmdFlush:
		err = vol.Flush(ctx)
	case cmdTrim:
		err = vol.Trim(ctx, off, int64(req.Length))
		if err == nil && req.Flags&cmdFlagFUA != 0 {
			err = vol.Flush(ctx)
		}
	case cmdWriteZeroes:
		err = vol.WriteZeroes(ctx, off, int64(req.Length), writeFlags(req.Flags))
	}
	var errno uint32
	if err != nil {
		errno = errnoFor(ctx, req.Type, err)
		lvl := slog.LevelWarn
		if errno != errIO || errors.Is(err, blockstore.ErrFrozen) {
			lvl = slog.LevelDebug // expected while a volume fails over or stops
		}
		c.log.Log(ctx, lvl, "nbd: request failed", "cmd", cmdName(req.Type), "offset", req.Offset,
			"length", req.Length, "errno", errno, "err", err)
	} else {
		switch req.Type {
		case cmdRead:
			c.s.st.bytesRead.Add(uint64(req.Length))
		case cmdWrite:
			c.s.st.bytesWritten.Add(uint64(req.Length))
		}
	}
	c.reply(req.Handle, errno, data)
	if c.inflight.Add(-1) == 0 && req.Type == cmdWrite && errno == 0 {
		if sa, ok := vol.(syncAheader); ok {
			// Nothing else to do until the client's next request, which
			// its pattern may say is a flush: get ahead of it.
			sa.SyncAhead(ctx)
		}
	}
}

// syncAheader is a volume that can make completed writes durable ahead of
// an expected flush.
type syncAheader interface {
	SyncAhead(ctx context.Context) bool
}

func writeFlags(f uint16) blockstore.WriteFlags {
	var w blockstore.WriteFlags
	if f&cmdFlagFUA != 0 {
		w |= blockstore.FUA
	}
	if f&cmdFlagNoHole != 0 {
		w |= blockstore.NoHole
	}
	return w
}

// errnoFor maps a volume error to the NBD error a client sees.
func errnoFor(ctx context.Context, cmd uint16, err error) uint32 {
	switch {
	case errors.Is(err, blockstore.ErrFrozen):
		return errIO // the request was not applied; never claim success
	case errors.Is(err, blockstore.ErrClosed):
		return errShutdown
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return errShutdown // we cancelled it: the server is stopping
	case errors.Is(err, blockstore.ErrReadOnly), errors.Is(err, syscall.EROFS):
		return errPerm
	case errors.Is(err, blockstore.ErrOutOfRange):
		if cmd == cmdWrite || cmd == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	}
	return errIO
}

// reply sends a simple reply, with data for a successful READ.
func (c *conn) reply(handle uint64, errno uint32, data []byte) {
	if errno != 0 {
		c.s.st.errs.Add(1)
	}
	var hdr [simpleReplyLen]byte
	putSimpleReply(hdr[:], errno, handle)
	parts := [][]byte{hdr[:], data}
	if c.coalesce && len(data) > 0 && len(data) <= maxCoalesce {
		// Write returns once the buffer was written or copied.
		buf := c.s.bufs.Get(simpleReplyLen + len(data))
		defer c.s.bufs.Put(buf)
		copy(buf, hdr[:])
		copy(buf[simpleReplyLen:], data)
		parts = [][]byte{buf}
	}
	if err := c.bw.Write(true, parts...); err != nil {
		c.log.Debug("nbd: sending reply failed; closing connection", "err", err)
		c.nc.Close() // wakes the reader
	}
}

// drain waits for in-flight requests. On shutdown it waits at most the
// grace period, then cancels them and gives them one more period.
func (c *conn) drain(ctx context.Context, cancelOps context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	grace := c.s.cfg.shutdownGrace
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	c.log.Warn("nbd: in-flight requests outlived the shutdown grace; cancelling them", "grace", grace)
	cancelOps()
	c.nc.SetWriteDeadline(time.Now().Add(grace))
	t.Reset(grace)
	select {
	case <-done:
	case <-t.C:
		c.log.Error("nbd: abandoning in-flight requests that ignore cancellation")
	}
}
