package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandemhci/tandem/blockstore"
)

var (
	errAborted      = errors.New("client sent NBD_OPT_ABORT")
	errProtocol     = errors.New("protocol violation")
	errTLSRequired  = errors.New("NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS")
	errTLSHandshake = errors.New("TLS handshake failed")
)

// export is an Export resolved for one connection: defaults applied,
// constraints validated, size and transmission flags fixed.
type export struct {
	name, desc                    string
	vol                           blockstore.Volume
	size                          uint64
	flags                         uint16
	readOnly                      bool
	minBlock, prefBlock, maxBlock uint32
	attach                        func() func()
	done                          <-chan struct{}
}

// handshakeResult is what negotiation hands to the transmission phase.
type handshakeResult struct {
	exp *export
	br  *bufio.Reader // may hold bytes the client sent after the final option
	// tc is the TLS session after NBD_OPT_STARTTLS (set even when the
	// handshake failed later, so it can be closed); transmission uses it
	// instead of the raw connection.
	tc *tls.Conn
}

// handshake runs fixed-newstyle negotiation until the client picks an
// export (NBD_OPT_EXPORT_NAME or a successful NBD_OPT_GO). With tlsCfg,
// it runs in FORCEDTLS mode: nothing but STARTTLS and ABORT is served
// until a TLS handshake with a verified client certificate succeeded.
func (s *Server) handshake(ctx context.Context, nc net.Conn, tlsCfg *tls.Config, log *slog.Logger) (hs handshakeResult, _ error) {
	deadline := time.Now().Add(s.cfg.handshakeTimeout)
	if err := nc.SetDeadline(deadline); err != nil {
		return hs, fmt.Errorf("set deadline: %w", err)
	}
	if ctx.Err() != nil { // the shutdown hook may have run before the deadline was set
		return hs, ctx.Err()
	}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	br := bufio.NewReaderSize(nc, 64<<10)
	bw := bufio.NewWriterSize(nc, 4<<10)
	if err := writeGreeting(bw); err != nil {
		return hs, fmt.Errorf("send greeting: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return hs, fmt.Errorf("send greeting: %w", err)
	}
	cflags, err := readClientFlags(br)
	if err != nil {
		return hs, fmt.Errorf("read client flags: %w", err)
	}
	if unknown := cflags &^ (flagCFixedNewstyle | flagCNoZeroes); unknown != 0 {
		return hs, fmt.Errorf("%w: unknown client flags %#x", errProtocol, unknown)
	}
	fixed := cflags&flagCFixedNewstyle != 0
	noZeroes := cflags&flagCNoZeroes != 0
	// tlsState is set once STARTTLS succeeded; from then on br and bw
	// wrap the TLS session, never the raw socket.
	var tlsState *tls.ConnectionState

	reply := func(opt, typ uint32, data []byte) error {
		_, err := bw.Write(appendOptionReply(nil, opt, typ, data))
		return err
	}
	// finish sends an option's final reply (ACK or an error with a message).
	finish := func(opt, typ uint32, msg string) error {
		if err := reply(opt, typ, []byte(sanitize(msg))); err != nil {
			return err
		}
		return bw.Flush()
	}

	for i := 0; ; i++ {
		if i >= maxOptions {
			return hs, fmt.Errorf("%w: more than %d options", errProtocol, maxOptions)
		}
		hdr, err := readOptionHeader(br)
		if err != nil {
			return hs, fmt.Errorf("read option: %w", err)
		}
		log.Debug("nbd: option", "opt", optName(hdr.Option), "len", hdr.Length)
		if !fixed && hdr.Option != optExportName {
			// Plain newstyle knows only EXPORT_NAME and has no error replies.
			return hs, fmt.Errorf("%w: option %s without fixed newstyle", errProtocol, optName(hdr.Option))
		}
		if tlsCfg != nil && tlsState == nil && hdr.Option != optStartTLS && hdr.Option != optAbort {
			s.st.tlsReqd.Add(1)
			if hdr.Option == optExportName {
				// It cannot carry an error: the spec says hang up.
				return hs, errTLSRequired
			}
			// Not even looked at: a stranger's options reach no code but this.
			if _, err := io.CopyN(io.Discard, br, int64(hdr.Length)); err != nil {
				return hs, fmt.Errorf("skip option: %w", err)
			}
			if err := finish(hdr.Option, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first"); err != nil {
				return hs, err
			}
			continue
		}
		if hdr.Length > maxOptionLen {
			if hdr.Option == optExportName {
				return hs, fmt.Errorf("%w: export name of %d bytes", errProtocol, hdr.Length)
			}
			// Skip the payload so the next option still parses.
			if _, err := io.CopyN(io.Discard, br, int64(hdr.Length)); err != nil {
				return hs, fmt.Errorf("skip option: %w", err)
			}
			if err := finish(hdr.Option, repErrTooBig, fmt.Sprintf("option data of %d bytes exceeds %d", hdr.Length, maxOptionLen)); err != nil {
				return hs, err
			}
			continue
		}
		data := make([]byte, hdr.Length)
		if _, err := io.ReadFull(br, data); err != nil {
			return hs, fmt.Errorf("read option %s: %w", optName(hdr.Option), err)
		}

		switch hdr.Option {
		case optExportName:
			if len(data) > maxStringLen {
				return hs, fmt.Errorf("%w: export name of %d bytes", errProtocol, len(data))
			}
			exp, _, err := s.open(hctx, string(data), tlsState, log)
			if err != nil {
				// EXPORT_NAME cannot carry an error: the only answer is to hang up.
				return hs, err
			}
			if _, err := bw.Write(appendExportNameReply(nil, exp.size, exp.flags, noZeroes)); err != nil {
				return hs, err
			}
			if err := bw.Flush(); err != nil {
				return hs, err
			}
			hs.exp, hs.br = exp, br
			return hs, nil

		case optAbort:
			// Best effort: the client may already have hung up.
			_ = finish(hdr.Option, repAck, "")
			return hs, errAborted

		case optList:
			if err := s.list(hctx, hdr.Option, data, tlsState, log, reply, finish); err != nil {
				return hs, err
			}
			if err := bw.Flush(); err != nil {
				return hs, err
			}

		case optInfo, optGo:
			req, err := decodeInfoRequest(data)
			if err != nil {
				if err := finish(hdr.Option, repErrInvalid, err.Error()); err != nil {
					return hs, err
				}
				continue
			}
			exp, rep, err := s.open(hctx, req.Name, tlsState, log)
			if err != nil {
				if err := finish(hdr.Option, rep, err.Error()); err != nil {
					return hs, err
				}
				continue
			}
			if err := reply(hdr.Option, repInfo, appendInfoExport(nil, exp.size, exp.flags)); err != nil {
				return hs, err
			}
			// Always sent: clients that did not ask must ignore it, and those
			// that did learn our limits.
			if err := reply(hdr.Option, repInfo, appendInfoBlockSize(nil, exp.minBlock, exp.prefBlock, exp.maxBlock)); err != nil {
				return hs, err
			}
			if req.has(infoName) {
				if err := reply(hdr.Option, repInfo, appendInfoString(nil, infoName, exp.name)); err != nil {
					return hs, err
				}
			}
			if req.has(infoDescription) && exp.desc != "" {
				if err := reply(hdr.Option, repInfo, appendInfoString(nil, infoDescription, exp.desc)); err != nil {
					return hs, err
				}
			}
			if err := finish(hdr.Option, repAck, ""); err != nil {
				return hs, err
			}
			if hdr.Option == optGo {
				hs.exp, hs.br = exp, br
				return hs, nil
			}

		case optStartTLS:
			switch {
			case tlsCfg == nil:
				if err := finish(hdr.Option, repErrUnsup, "TLS is not supported on this listener"); err != nil {
					return hs, err
				}
				continue
			case tlsState != nil:
				if err := finish(hdr.Option, repErrInvalid, "TLS is already negotiated"); err != nil {
					return hs, err
				}
				continue
			case len(data) != 0:
				if err := finish(hdr.Option, repErrInvalid, "NBD_OPT_STARTTLS takes no data"); err != nil {
					return hs, err
				}
				continue
			case br.Buffered() != 0:
				// The client must wait for our reply; plaintext sent behind
				// STARTTLS would otherwise be read as if it came through TLS.
				return hs, fmt.Errorf("%w: %d bytes sent after NBD_OPT_STARTTLS", errProtocol, br.Buffered())
			}
			if err := finish(hdr.Option, repAck, ""); err != nil {
				return hs, err
			}
			hs.tc = tls.Server(nc, tlsCfg)
			st, err := s.startTLS(hctx, hs.tc)
			if err != nil {
				return hs, err
			}
			tlsState = &st
			hctx = context.WithValue(hctx, tlsStateKey{}, tlsState)
			br = bufio.NewReaderSize(hs.tc, 64<<10)
			bw = bufio.NewWriterSize(hs.tc, 4<<10)
			log.Debug("nbd: TLS established", "client", st.PeerCertificates[0].Subject.String(), "version", tls.VersionName(st.Version))

		case optStructuredReply:
			// Simple replies only: see the package documentation.
			if err := finish(hdr.Option, repErrUnsup, "structured replies are not supported"); err != nil {
				return hs, err
			}

		default:
			if err := finish(hdr.Option, repErrUnsup, "unsupported option "+optName(hdr.Option)); err != nil {
				return hs, err
			}
		}
	}
}

// startTLS runs the TLS handshake after NBD_OPT_STARTTLS was
// acknowledged. A failure ends the connection: there is no way back to
// plaintext once the ACK is sent.
func (s *Server) startTLS(ctx context.Context, tc *tls.Conn) (tls.ConnectionState, error) {
	if err := tc.HandshakeContext(ctx); err != nil {
		s.st.tlsFail.Add(1)
		return tls.ConnectionState{}, fmt.Errorf("%w: %w", errTLSHandshake, err)
	}
	st := tc.ConnectionState()
	// Checked here too, whatever the configuration (GetConfigForClient can
	// hand out anything): no verified client certificate, no service.
	if len(st.PeerCertificates) == 0 || len(st.VerifiedChains) == 0 {
		s.st.tlsFail.Add(1)
		return tls.ConnectionState{}, fmt.Errorf("%w: no verified client certificate", errTLSHandshake)
	}
	return st, nil
}

// allowed asks Authorize whether the TLS client may see or open name.
// Plain connections (Serve) are not asked: their access control is the
// listener's.
func (s *Server) allowed(ctx context.Context, tlsState *tls.ConnectionState, name string) error {
	if tlsState == nil || s.cfg.authorize == nil {
		return nil
	}
	return s.cfg.authorize(ctx, *tlsState, name)
}

// open authorizes, looks up and validates an export. An unauthorized TLS
// client gets the same NBD_REP_ERR_UNKNOWN whether or not the export
// exists, and no text from the Lookup (which may name the primary).
func (s *Server) open(ctx context.Context, name string, tlsState *tls.ConnectionState, log *slog.Logger) (*export, uint32, error) {
	refuse := func(err error) (*export, uint32, error) {
		s.st.unauthorized.Add(1)
		log.Info("nbd: export not authorized", "name", name, "err", err)
		return nil, repErrUnknown, fmt.Errorf("%w %q", ErrUnknownExport, name)
	}
	if err := s.allowed(ctx, tlsState, name); err != nil {
		return refuse(err)
	}
	exp, rep, err := s.resolve(ctx, name)
	if err != nil {
		// The client is entitled to this export, so it may learn why it
		// cannot have it here (such as where the primary is).
		log.Info("nbd: export refused", "name", name, "err", err)
		return nil, rep, err
	}
	// A Lookup that resolves a name to another export (the default
	// export "", an alias) must not widen what the client may open.
	if exp.name != name {
		if err := s.allowed(ctx, tlsState, exp.name); err != nil {
			return refuse(err)
		}
	}
	return exp, 0, nil
}

// list answers NBD_OPT_LIST; over TLS it lists only the exports Authorize
// allows.
func (s *Server) list(ctx context.Context, opt uint32, data []byte, tlsState *tls.ConnectionState, log *slog.Logger,
	reply func(opt, typ uint32, data []byte) error, finish func(opt, typ uint32, msg string) error) error {
	if len(data) != 0 {
		return finish(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	if s.cfg.lister == nil {
		return finish(opt, repErrPolicy, "export listing is disabled")
	}
	entries, err := s.cfg.lister(ctx)
	if err != nil {
		if errors.Is(err, ErrShutdown) || ctx.Err() != nil {
			return finish(opt, repErrShutdown, err.Error())
		}
		return finish(opt, repErrPlatform, err.Error())
	}
	for _, e := range entries {
		if len(e.Name) > maxStringLen {
			continue // a client could not ask for it anyway
		}
		if err := s.allowed(ctx, tlsState, e.Name); err != nil {
			s.st.unauthorized.Add(1)
			log.Debug("nbd: export hidden from list", "name", e.Name, "err", err)
			continue
		}
		if err := reply(opt, repServer, appendServerEntry(nil, e.Name, sanitize(e.Description))); err != nil {
			return err
		}
	}
	return finish(opt, repAck, "")
}

// resolve looks an export up and validates it. On failure it returns the
// option reply type to send along with the error.
func (s *Server) resolve(ctx context.Context, name string) (*export, uint32, error) {
	if s.lookup == nil {
		return nil, repErrUnknown, fmt.Errorf("%w %q", ErrUnknownExport, name)
	}
	e, err := s.lookup(ctx, name)
	if err != nil {
		if errors.Is(err, ErrShutdown) || ctx.Err() != nil {
			return nil, repErrShutdown, err
		}
		return nil, repErrUnknown, err
	}
	if e == nil || e.Volume == nil {
		return nil, repErrUnknown, fmt.Errorf("export %q has no volume", name)
	}
	exp := &export{
		name:      e.Name,
		desc:      e.Description,
		vol:       e.Volume,
		readOnly:  e.ReadOnly,
		minBlock:  orDefault(e.MinBlock, defaultMinBlock),
		prefBlock: orDefault(e.PreferredBlock, defaultPreferredBlock),
		maxBlock:  orDefault(e.MaxBlock, defaultMaxBlock),
		attach:    e.Attach,
		done:      e.Done,
	}
	if exp.name == "" {
		exp.name = name
	}
	size := e.Volume.Size()
	if size < 0 {
		return nil, repErrUnknown, fmt.Errorf("export %q: negative size %d", name, size)
	}
	exp.size = uint64(size)
	if err := checkBlockSizes(exp.minBlock, exp.prefBlock, exp.maxBlock); err != nil {
		s.log.Error("nbd: export misconfigured", "name", name, "err", err)
		return nil, repErrUnknown, fmt.Errorf("export %q: %w", name, err)
	}
	exp.flags = flagHasFlags | flagSendFlush
	if exp.readOnly {
		exp.flags |= flagReadOnly
	} else {
		exp.flags |= flagSendFUA | flagSendTrim | flagSendWriteZeroes
	}
	if e.MultiConn {
		exp.flags |= flagCanMultiConn
	}
	return exp, 0, nil
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// checkBlockSizes enforces the spec's rules for NBD_INFO_BLOCK_SIZE, which
// clients such as QEMU check too.
func checkBlockSizes(minB, prefB, maxB uint32) error {
	switch {
	case bits.OnesCount32(minB) != 1 || minB > 64<<10:
		return fmt.Errorf("minimum block size %d is not a power of 2 up to 64 KiB", minB)
	case bits.OnesCount32(prefB) != 1 || prefB < max(minB, 512):
		return fmt.Errorf("preferred block size %d is not a power of 2 of at least max(minimum, 512)", prefB)
	case maxB%minB != 0 || maxB < prefB || maxB > maxBlockCap:
		return fmt.Errorf("maximum block size %d must be a multiple of the minimum, at least the preferred and at most %d", maxB, maxBlockCap)
	}
	return nil
}

// sanitize makes s a valid protocol string: UTF-8, no NUL, at most 4 KiB.
func sanitize(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) <= maxStringLen {
		return s
	}
	s = s[:maxStringLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
