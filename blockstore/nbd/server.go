package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/bufpool"
)

var (
	// ErrUnknownExport is what a Lookup returns for a name it does not
	// serve; the client gets NBD_REP_ERR_UNKNOWN.
	ErrUnknownExport = errors.New("nbd: unknown export")
	// ErrShutdown, returned (wrapped) by a Lookup or Lister, makes the
	// client get NBD_REP_ERR_SHUTDOWN: "go away, this server is stopping".
	ErrShutdown = errors.New("nbd: server is shutting down")
	// ErrServerClosed is returned by Serve after Close.
	ErrServerClosed = errors.New("nbd: server closed")
	// ErrTLSConfig is returned by ServeTLS when WithTLS is missing or does
	// not verify client certificates.
	ErrTLSConfig = errors.New("nbd: TLS configuration")
)

// Export is one named volume the server offers.
type Export struct {
	Name        string
	Description string
	// Volume is used, never closed, by the server: its owner closes it.
	Volume   blockstore.Volume
	ReadOnly bool
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: safe when every
	// connection to the volume sees one cache, which holds for our volumes.
	MultiConn bool
	// Block size constraints (NBD_INFO_BLOCK_SIZE); zero means the default:
	// 512, 4096 and 32 MiB.
	MinBlock, PreferredBlock, MaxBlock uint32
	// Attach, when set, is called when a client enters transmission with
	// this export and returns what to call when that connection ends; the
	// owner uses it to know whether the volume is attached.
	Attach func() (detach func())
	// Done, when set, ends the export's connections when it is closed, as
	// a stopping server does (the reader stops; requests in flight are
	// answered): the volume behind it no longer serves, and a client that
	// reconnects finds what serves it now (QEMU's reconnect-delay).
	Done <-chan struct{}
}

// Lookup returns the export for a name, or an error: ErrUnknownExport, or
// any other error (such as "this node is not the primary of volume X"),
// whose text is sent to the client with NBD_REP_ERR_UNKNOWN, or with
// NBD_REP_ERR_SHUTDOWN when it wraps ErrShutdown.
type Lookup func(ctx context.Context, name string) (*Export, error)

// ListEntry is one export in an NBD_OPT_LIST reply.
type ListEntry struct {
	Name        string
	Description string
}

// Lister returns the exports to list for NBD_OPT_LIST.
type Lister func(ctx context.Context) ([]ListEntry, error)

// Authorize decides whether the TLS client described by state (its
// verified chain is in state.PeerCertificates and state.VerifiedChains)
// may see and open export name; a nil error allows it. It is called on
// connections served by ServeTLS only, after the TLS handshake: before
// the Lookup for NBD_OPT_INFO, NBD_OPT_GO and NBD_OPT_EXPORT_NAME, and
// for each entry of NBD_OPT_LIST. Its error is logged, never sent: the
// client only learns that the export is unknown.
type Authorize func(ctx context.Context, state tls.ConnectionState, name string) error

// tlsStateKey carries a TLS client's state in the context of the Lookup,
// Lister and Authorize calls made for it.
type tlsStateKey struct{}

// ClientTLS returns the TLS state of the client on whose behalf a Lookup,
// Lister or Authorize runs, and false for a client of a plain (Serve)
// listener. A Lookup uses it to keep what only local clients may do (such
// as taking a volume over in a migration window) off the network port.
func ClientTLS(ctx context.Context) (tls.ConnectionState, bool) {
	st, ok := ctx.Value(tlsStateKey{}).(*tls.ConnectionState)
	if !ok || st == nil {
		return tls.ConnectionState{}, false
	}
	return *st, true
}

// ContextWithClientTLS returns ctx carrying state as ClientTLS reports
// it, as the server does for its TLS clients: for tests of a Lookup.
func ContextWithClientTLS(ctx context.Context, state tls.ConnectionState) context.Context {
	return context.WithValue(ctx, tlsStateKey{}, &state)
}

// Option configures a Server.
type Option func(*config)

type config struct {
	maxConns         int
	maxInflight      int
	maxInflightBytes int64
	lister           Lister
	handshakeTimeout time.Duration
	shutdownGrace    time.Duration
	tls              *tls.Config
	authorize        Authorize
}

// WithMaxConns bounds concurrent connections (default 1024); connections
// over the limit are closed as soon as they are accepted.
func WithMaxConns(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxConns = n
		}
	}
}

// WithMaxInflight bounds the requests one connection may have in flight
// (default 64); past it the server stops reading from that socket.
func WithMaxInflight(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxInflight = n
		}
	}
}

// WithMaxInflightBytes bounds the read and write payload bytes one
// connection may have in flight (default 128 MiB).
func WithMaxInflightBytes(n int64) Option {
	return func(c *config) {
		if n > 0 {
			c.maxInflightBytes = n
		}
	}
}

// WithList allows NBD_OPT_LIST, answered by l; without it listing is
// refused with NBD_REP_ERR_POLICY.
func WithList(l Lister) Option {
	return func(c *config) { c.lister = l }
}

// WithTLS sets the configuration of the listeners served by ServeTLS. It
// must verify client certificates (ClientAuth
// tls.RequireAndVerifyClientCert, ClientCAs the trusted CAs) and is used
// as is, so GetCertificate or GetConfigForClient can rotate certificates
// without a restart. Serve ignores it.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.tls = cfg }
}

// WithAuthorize sets the per-export authorization of TLS clients; without
// it every client whose certificate verified may open every export.
func WithAuthorize(a Authorize) Option {
	return func(c *config) { c.authorize = a }
}

// WithHandshakeTimeout bounds option negotiation (default 30 s).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.handshakeTimeout = d
		}
	}
}

// WithShutdownGrace is how long a stopping server lets in-flight requests
// finish before cancelling them (default 10 s).
func WithShutdownGrace(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.shutdownGrace = d
		}
	}
}

// Stats is a snapshot of a server's counters since it was created.
type Stats struct {
	Connections         uint64 // accepted and served
	ActiveConnections   int64
	RejectedConnections uint64 // over WithMaxConns
	HandshakeFailures   uint64 // connections that never reached transmission
	Reads               uint64
	Writes              uint64
	Flushes             uint64
	Trims               uint64
	WriteZeroes         uint64
	Caches              uint64
	Disconnects         uint64 // NBD_CMD_DISC
	OtherRequests       uint64 // unknown or unsupported commands
	BytesRead           uint64 // payload sent to clients
	BytesWritten        uint64 // payload written to volumes
	Errors              uint64 // requests answered with an error
	ProtocolErrors      uint64 // connections dropped for malformed input
	TLSRequired         uint64 // options refused with NBD_REP_ERR_TLS_REQD, or EXPORT_NAME before STARTTLS
	TLSHandshakeErrors  uint64 // failed TLS handshakes (bad or missing client certificate included)
	Unauthorized        uint64 // exports refused, or hidden from a list, by Authorize
}

type counters struct {
	conns, rejected, handshakeFail                     atomic.Uint64
	active                                             atomic.Int64
	reads, writes, flushes, trims, zeroes, caches      atomic.Uint64
	discs, other, bytesRead, bytesWritten, errs, proto atomic.Uint64
	tlsReqd, tlsFail, unauthorized                     atomic.Uint64
}

// Server serves exports over NBD on any number of listeners.
type Server struct {
	log    *slog.Logger
	lookup Lookup
	cfg    config
	bufs   bufpool.Pool
	st     counters

	mu      sync.Mutex
	closed  bool
	done    chan struct{} // closed by Close
	serving sync.WaitGroup
}

// NewServer returns a server that resolves export names with lookup.
func NewServer(log *slog.Logger, lookup Lookup, opts ...Option) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := config{
		maxConns:         1024,
		maxInflight:      64,
		maxInflightBytes: 128 << 20,
		handshakeTimeout: 30 * time.Second,
		shutdownGrace:    10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return &Server{log: log, lookup: lookup, cfg: cfg, done: make(chan struct{})}
}

// Serve accepts connections on ln (unix or TCP) until ctx ends, ln fails or
// Close is called, without TLS (the NOTLS mode of the protocol: the
// listener's access control is the caller's, such as a unix socket's
// permissions). On return ln is closed and so is every connection it
// accepted, after their in-flight requests finished (see
// WithShutdownGrace). It returns nil when ctx ended, ErrServerClosed after
// Close, and the accept error otherwise.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, nil)
}

// ServeTLS is Serve in the protocol's FORCEDTLS mode, with the WithTLS
// configuration: before NBD_OPT_STARTTLS and a TLS handshake in which the
// client presented a certificate that verified, only NBD_OPT_ABORT is
// served, every other option is answered NBD_REP_ERR_TLS_REQD and
// NBD_OPT_EXPORT_NAME closes the connection. After it, exports are
// filtered by WithAuthorize. It returns ErrTLSConfig (and closes ln) when
// WithTLS is missing or does not require verified client certificates.
func (s *Server) ServeTLS(ctx context.Context, ln net.Listener) error {
	if err := checkTLSConfig(s.cfg.tls); err != nil {
		ln.Close()
		return err
	}
	return s.serve(ctx, ln, s.cfg.tls)
}

// checkTLSConfig refuses a configuration that would let a client without
// a certificate signed by a trusted CA through the handshake.
func checkTLSConfig(c *tls.Config) error {
	switch {
	case c == nil:
		return fmt.Errorf("%w: ServeTLS without WithTLS", ErrTLSConfig)
	case c.GetConfigForClient == nil && c.ClientAuth != tls.RequireAndVerifyClientCert:
		return fmt.Errorf("%w: ClientAuth is %v, want RequireAndVerifyClientCert", ErrTLSConfig, c.ClientAuth)
	case c.GetConfigForClient == nil && c.Certificates == nil && c.GetCertificate == nil:
		return fmt.Errorf("%w: no server certificate", ErrTLSConfig)
	}
	return nil
}

// serve runs Serve or ServeTLS: tlsCfg nil means no TLS on ln.
func (s *Server) serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-sctx.Done():
		}
	}()
	stopAccept := context.AfterFunc(sctx, func() { ln.Close() })
	defer stopAccept()

	var conns sync.WaitGroup
	var result error
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if sctx.Err() != nil {
				break
			}
			if isTemporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept failed; retrying", "err", err, "delay", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-sctx.Done():
					t.Stop()
				}
				continue
			}
			result = fmt.Errorf("nbd: accept on %s: %w", ln.Addr(), err)
			break
		}
		delay = 0
		if !s.admit() {
			s.st.rejected.Add(1)
			s.log.Warn("nbd: too many connections; refusing", "remote", remoteString(nc), "max", s.cfg.maxConns)
			nc.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer s.st.active.Add(-1)
			s.serveConn(sctx, nc, tlsCfg)
		}()
	}
	cancel()
	ln.Close()
	conns.Wait()
	if result != nil {
		return result
	}
	select {
	case <-s.done:
		return ErrServerClosed
	default:
		return nil
	}
}

// admit counts a new connection unless that would exceed maxConns.
func (s *Server) admit() bool {
	for {
		n := s.st.active.Load()
		if n >= int64(s.cfg.maxConns) {
			return false
		}
		if s.st.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Close stops every Serve call and waits for them to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	s.serving.Wait()
	return nil
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	c := &s.st
	return Stats{
		Connections:         c.conns.Load(),
		ActiveConnections:   c.active.Load(),
		RejectedConnections: c.rejected.Load(),
		HandshakeFailures:   c.handshakeFail.Load(),
		Reads:               c.reads.Load(),
		Writes:              c.writes.Load(),
		Flushes:             c.flushes.Load(),
		Trims:               c.trims.Load(),
		WriteZeroes:         c.zeroes.Load(),
		Caches:              c.caches.Load(),
		Disconnects:         c.discs.Load(),
		OtherRequests:       c.other.Load(),
		BytesRead:           c.bytesRead.Load(),
		BytesWritten:        c.bytesWritten.Load(),
		Errors:              c.errs.Load(),
		ProtocolErrors:      c.proto.Load(),
		TLSRequired:         c.tlsReqd.Load(),
		TLSHandshakeErrors:  c.tlsFail.Load(),
		Unauthorized:        c.unauthorized.Load(),
	}
}

// isTemporaryAccept reports accept errors worth retrying (resource
// exhaustion, a peer that gave up before accept).
func isTemporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// serveConn runs one connection to completion: handshake, then
// transmission. ctx ending means the server is stopping. tlsCfg non-nil
// requires STARTTLS.
func (s *Server) serveConn(ctx context.Context, nc net.Conn, tlsCfg *tls.Config) {
	s.st.conns.Add(1)
	defer nc.Close()
	log := s.log.With("remote", remoteString(nc))
	// Shutdown unblocks the reader; writes keep going so in-flight requests
	// can still be answered.
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Now()) })
	defer stop()

	hs, err := s.handshake(ctx, nc, tlsCfg, log)
	if hs.tc != nil {
		// Closed first, so the client gets a TLS close_notify (bounded by a
		// 5 s write deadline in crypto/tls) before the socket closes.
		defer hs.tc.Close()
	}
	if err != nil {
		s.st.handshakeFail.Add(1)
		switch {
		case errors.Is(err, errAborted):
			log.Debug("nbd: client aborted negotiation")
		case errors.Is(err, errTLSHandshake), errors.Is(err, errTLSRequired):
			// Strangers knocking on a network port are counted in Stats; a
			// line each would let them flood the log.
			log.Debug("nbd: client refused", "err", err)
		case errors.Is(err, errBadMagic) || errors.Is(err, errProtocol):
			s.st.proto.Add(1)
			log.Warn("nbd: handshake failed", "err", err)
		default:
			log.Debug("nbd: handshake ended", "err", err)
		}
		return
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		log.Debug("nbd: clearing deadline", "err", err)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if hs.exp.attach != nil {
		detach := hs.exp.attach()
		defer detach()
	}
	// The shutdown hook keeps using the raw socket: a read deadline set
	// there reaches the TLS session's reads too.
	tc := nc
	if hs.tc != nil {
		tc = hs.tc
	}
	if done := hs.exp.done; done != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-done:
				log.Info("nbd: the export's volume stopped serving; closing the connection", "export", hs.exp.name)
				cancel()
				nc.SetReadDeadline(time.Now())
			case <-ctx.Done():
			}
		}()
	}
	c := newConn(s, tc, hs, log.With("export", hs.exp.name))
	c.serve(ctx)
}

func remoteString(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}
