package raftnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Name is the transport's name in dragonboat's logs.
const Name = "tandem-tls"

const (
	magic   = "TDRT"
	version = 1
	// kindMessages and kindChunks say what a connection carries.
	kindMessages = 1
	kindChunks   = 2
	preambleLen  = len(magic) + 2
	// MaxFrame bounds one frame. dragonboat's own limit on a message batch
	// is 64 MiB (settings.MaxMessageBatchSize) and chunks are 2 MiB.
	MaxFrame = 64 << 20
	// writeTimeout bounds one send, so a peer that stopped reading cannot
	// block the sender's queue for ever; dragonboat then reconnects.
	writeTimeout = 15 * time.Second
	dialTimeout  = 5 * time.Second
	keepAlive    = 10 * time.Second
)

// ErrBadFrame reports a connection that broke the wire format.
var ErrBadFrame = errors.New("raftnet: malformed stream")

// Config is what the transport needs from its host.
type Config struct {
	// ListenAddr is where other hosts dial this one.
	ListenAddr string
	// ServerTLS returns the configuration for each accepted connection;
	// it must require and check the client's certificate.
	ServerTLS func() (*tls.Config, error)
	// ClientTLS returns the configuration for each dial; it must present
	// this host's certificate and check the server's.
	ClientTLS func() (*tls.Config, error)
	Log       *slog.Logger
}

// Factory makes the transport for dragonboat's NodeHostConfig.Expert.
//
// One factory may serve two NodeHosts of one process that share a Raft
// address (consensus runs the volume shards on a second host with a slower
// tick): the first transport it creates listens, the second only dials,
// and the first hands each received message and chunk to the host whose
// shard it is (OnSecond).
type Factory struct {
	Config Config
	// OnSecond reports whether a shard runs on the second NodeHost; nil
	// with a single host. Messages for shards neither host runs go to the
	// first, which drops them as dragonboat does.
	OnSecond func(shardID uint64) bool

	mu sync.Mutex
	ts []*Transport // in the order Create made them
}

// Create is called by dragonboat once per NodeHost.
func (f *Factory) Create(_ config.NodeHostConfig, onMessages raftio.MessageHandler, onChunk raftio.ChunkHandler) raftio.ITransport {
	log := f.Config.Log
	if log == nil {
		log = slog.Default()
	}
	t := &Transport{cfg: f.Config, onMessages: onMessages, onChunk: onChunk, log: log,
		conns: map[net.Conn][]*x509.Certificate{}, dialed: map[*conn]struct{}{}}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ts) > 0 {
		first := f.ts[0]
		t.first = first
		first.secMu.Lock()
		first.onSecond, first.second = f.OnSecond, t
		first.secMu.Unlock()
	}
	f.ts = append(f.ts, t)
	return t
}

// Recheck is Transport.Recheck on every transport Create made (none yet:
// nothing to check).
func (f *Factory) Recheck(check func(leaf *x509.Certificate) error) int {
	f.mu.Lock()
	ts := append([]*Transport(nil), f.ts...)
	f.mu.Unlock()
	n := 0
	for _, t := range ts {
		n += t.Recheck(check)
	}
	return n
}

// Validate accepts host:port addresses, as the TCP transport does.
func (f *Factory) Validate(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	return err == nil && host != "" && port != ""
}

// Transport is one host's raftio.ITransport.
type Transport struct {
	cfg        Config
	onMessages raftio.MessageHandler
	onChunk    raftio.ChunkHandler
	log        *slog.Logger

	mu sync.Mutex
	ln net.Listener
	// conns are the accepted connections, with the peer's certificate
	// chain once the handshake passed; dialed the ones this host made.
	conns  map[net.Conn][]*x509.Certificate
	dialed map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup

	// first is set on the second transport of a Factory, which receives
	// through the first's listener.
	first *Transport
	// second is the Factory's second transport until it closes, and
	// onSecond says which shards are its host's (the first transport
	// only). secMu is held across a delivery to second, so that none
	// reaches its host after its Close: dragonboat stops a host's engine
	// right after closing its transport.
	secMu    sync.RWMutex
	second   *Transport
	onSecond func(shardID uint64) bool
}

// Name implements raftio.ITransport.
func (t *Transport) Name() string { return Name }

// Start listens; dragonboat calls it once.
func (t *Transport) Start() error {
	if t.cfg.ServerTLS == nil || t.cfg.ClientTLS == nil {
		return errors.New("raftnet: ServerTLS and ClientTLS are required")
	}
	if t.first != nil {
		return nil
	}
	ln, err := net.Listen("tcp", t.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("raftnet: listen %s: %w", t.cfg.ListenAddr, err)
	}
	t.mu.Lock()
	t.ln = ln
	t.mu.Unlock()
	t.wg.Add(1)
	go t.accept(ln)
	return nil
}

func (t *Transport) accept(ln net.Listener) {
	defer t.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.log.Warn("raft transport stopped accepting", "err", err)
			}
			return
		}
		if !t.track(nc) {
			nc.Close()
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(nc)
			// serve returns only when the connection ends.
			if err := t.serve(nc); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.log.Debug("raft connection closed", "remote", nc.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (t *Transport) track(nc net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[nc] = nil
	return true
}

// verified records the peer certificates of the accepted connection nc.
func (t *Transport) verified(nc net.Conn, chain []*x509.Certificate) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[nc]; ok {
		t.conns[nc] = chain
	}
}

// Recheck applies check to the peer certificate of every open connection,
// accepted or dialed, and closes those it refuses now: the handshake
// checked the revocation list once, and a certificate revoked since (a
// removed node) must not keep its connections. It returns how many it
// closed; dragonboat dials again, through a fresh handshake.
func (t *Transport) Recheck(check func(leaf *x509.Certificate) error) int {
	var refused []io.Closer
	t.mu.Lock()
	for nc, chain := range t.conns {
		if len(chain) > 0 && check(chain[0]) != nil {
			refused = append(refused, nc)
		}
	}
	for c := range t.dialed {
		if c.leaf != nil && check(c.leaf) != nil {
			refused = append(refused, c.nc)
		}
	}
	t.mu.Unlock()
	for _, c := range refused {
		c.Close()
	}
	return len(refused)
}

func (t *Transport) untrack(nc net.Conn) {
	nc.Close()
	t.mu.Lock()
	delete(t.conns, nc)
	t.mu.Unlock()
}

// serve runs one accepted connection: the TLS handshake under the current
// server configuration, then frames until the peer goes away.
func (t *Transport) serve(nc net.Conn) error {
	cfg, err := t.cfg.ServerTLS()
	if err != nil {
		return fmt.Errorf("raftnet: server TLS: %w", err)
	}
	tc := tls.Server(nc, cfg)
	_ = tc.SetDeadline(time.Now().Add(dialTimeout))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("raftnet: handshake: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	if len(tc.ConnectionState().PeerCertificates) == 0 {
		return errors.New("raftnet: peer presented no certificate (the server configuration must require one)")
	}
	t.verified(nc, tc.ConnectionState().PeerCertificates)
	r := bufio.NewReaderSize(tc, 64<<10)
	kind, err := readPreamble(r)
	if err != nil {
		return err
	}
	for {
		frame, err := readFrame(r)
		if err != nil {
			return err
		}
		switch kind {
		case kindMessages:
			var b pb.MessageBatch
			if err := decode(&b, frame); err != nil {
				return fmt.Errorf("%w: message batch: %v", ErrBadFrame, err)
			}
			t.deliver(b)
		case kindChunks:
			var c pb.Chunk
			if err := decode(&c, frame); err != nil {
				return fmt.Errorf("%w: snapshot chunk: %v", ErrBadFrame, err)
			}
			if !t.deliverChunk(c) {
				return fmt.Errorf("raftnet: snapshot chunk %d of shard %d refused", c.ChunkId, c.ShardID)
			}
		}
	}
}

// deliver hands a received batch to the host of its shards: a peer's
// host sends only its own shards' messages, so a batch is split only when
// the two hosts disagree about a shard (one being created or removed).
func (t *Transport) deliver(b pb.MessageBatch) {
	t.secMu.RLock()
	defer t.secMu.RUnlock()
	s := t.second
	if s == nil || t.onSecond == nil {
		t.onMessages(b)
		return
	}
	var first, second []pb.Message
	for _, m := range b.Requests {
		if t.onSecond(m.ShardID) {
			second = append(second, m)
		} else {
			first = append(first, m)
		}
	}
	switch {
	case len(second) == 0:
		t.onMessages(b)
	case len(first) == 0:
		s.onMessages(b)
	default:
		sb := b
		sb.Requests, b.Requests = second, first
		t.onMessages(b)
		s.onMessages(sb)
	}
}

// deliverChunk hands a received snapshot chunk to the host of its shard.
func (t *Transport) deliverChunk(c pb.Chunk) bool {
	t.secMu.RLock()
	defer t.secMu.RUnlock()
	if t.second != nil && t.onSecond != nil && t.onSecond(c.ShardID) {
		return t.second.onChunk(c)
	}
	return t.onChunk(c)
}

// decode unmarshals a frame. dragonboat's hand-optimised decoders index
// past the end of some malformed inputs (found by FuzzStream), and a
// panic there would take the whole node down; it is one bad frame.
func decode(m interface{ Unmarshal([]byte) error }, frame []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable: %v", r)
		}
	}()
	return m.Unmarshal(frame)
}

// readPreamble reads and checks the connection's preamble and returns its kind.
func readPreamble(r io.Reader) (byte, error) {
	var p [preambleLen]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return 0, err
	}
	if string(p[:len(magic)]) != magic {
		return 0, fmt.Errorf("%w: not a Tandem Raft connection", ErrBadFrame)
	}
	if p[len(magic)] != version {
		return 0, fmt.Errorf("%w: version %d, this host speaks %d", ErrBadFrame, p[len(magic)], version)
	}
	kind := p[len(magic)+1]
	if kind != kindMessages && kind != kindChunks {
		return 0, fmt.Errorf("%w: unknown kind %d", ErrBadFrame, kind)
	}
	return kind, nil
}

// readFrame reads one length-prefixed frame into a fresh buffer (the
// decoded messages may keep references to it).
func readFrame(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrBadFrame, n, MaxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: truncated frame: %v", ErrBadFrame, err)
	}
	return buf, nil
}

// Close stops the listener and every connection, and waits for them.
func (t *Transport) Close() error {
	if f := t.first; f != nil {
		// Nothing more for this host: its engine stops next.
		f.secMu.Lock()
		if f.second == t {
			f.second = nil
		}
		f.secMu.Unlock()
	}
	t.mu.Lock()
	t.closed = true
	if t.ln != nil {
		t.ln.Close()
	}
	for nc := range t.conns {
		nc.Close()
	}
	for c := range t.dialed {
		c.nc.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// GetConnection dials target for message batches.
func (t *Transport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	return t.dial(ctx, target, kindMessages)
}

// GetSnapshotConnection dials target for one snapshot's chunks.
func (t *Transport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	return t.dial(ctx, target, kindChunks)
}

func (t *Transport) dial(ctx context.Context, target string, kind byte) (*conn, error) {
	cfg, err := t.cfg.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("raftnet: client TLS: %w", err)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("raftnet: dial %s: %w", target, err)
	}
	c := &conn{nc: nc, w: bufio.NewWriterSize(nc, 64<<10), t: t}
	if tc, ok := nc.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			c.leaf = certs[0]
		}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		nc.Close()
		return nil, errors.New("raftnet: transport closed")
	}
	t.dialed[c] = struct{}{}
	t.mu.Unlock()
	pre := append([]byte(magic), version, kind)
	if err := c.send(pre, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// conn is the sending side of one connection. dragonboat uses each from a
// single goroutine; the mutex keeps frames whole should that change.
type conn struct {
	mu sync.Mutex
	nc net.Conn
	w  *bufio.Writer
	// leaf is the server's certificate, t the transport that tracks c.
	leaf *x509.Certificate
	t    *Transport
}

func (c *conn) send(head, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.w.Write(head); err != nil {
		return fmt.Errorf("raftnet: send: %w", err)
	}
	if _, err := c.w.Write(body); err != nil {
		return fmt.Errorf("raftnet: send: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("raftnet: send: %w", err)
	}
	return nil
}

func (c *conn) sendFrame(payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("raftnet: frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(payload)))
	return c.send(h[:], payload)
}

// SendMessageBatch implements raftio.IConnection.
func (c *conn) SendMessageBatch(b pb.MessageBatch) error {
	data, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("raftnet: encode message batch: %w", err)
	}
	return c.sendFrame(data)
}

// SendChunk implements raftio.ISnapshotConnection.
func (c *conn) SendChunk(ch pb.Chunk) error {
	data, err := ch.Marshal()
	if err != nil {
		return fmt.Errorf("raftnet: encode snapshot chunk: %w", err)
	}
	return c.sendFrame(data)
}

// Close implements raftio.IConnection. It does not wait for a send in
// progress: closing the socket is what unblocks it.
func (c *conn) Close() {
	c.nc.Close()
	c.t.mu.Lock()
	delete(c.t.dialed, c)
	c.t.mu.Unlock()
}
