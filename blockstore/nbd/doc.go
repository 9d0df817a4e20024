// Package nbd exports blockstore volumes over the Network Block Device
// protocol (doc/proto.md in NetworkBlockDevice/nbd), for QEMU's built-in
// NBD client (virtio-blk guests, qemu-img, qemu-io), libnbd (nbdinfo,
// nbdcopy, nbdsh) and fio's nbd engine.
//
// Owner: the storage maintainers.
//
// # Protocol subset
//
// Handshake: fixed newstyle only; NOTLS mode on Serve listeners, FORCEDTLS
// on ServeTLS ones (see TLS below). NBD_FLAG_C_FIXED_NEWSTYLE and
// NBD_FLAG_C_NO_ZEROES are honoured; a client without fixed newstyle may
// only send NBD_OPT_EXPORT_NAME. Options:
//   - EXPORT_NAME, ABORT, INFO and GO. INFO and GO always reply
//     NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, plus NBD_INFO_NAME and
//     NBD_INFO_DESCRIPTION when asked for.
//   - LIST, only with WithList (NBD_REP_ERR_POLICY otherwise).
//   - STARTTLS: on ServeTLS listeners only (NBD_REP_ERR_UNSUP on the others).
//   - STRUCTURED_REPLY, the metadata-context options and anything unknown:
//     NBD_REP_ERR_UNSUP.
//   - Options longer than 64 KiB are skipped and answered
//     NBD_REP_ERR_TOO_BIG; more than 1024 options, or a handshake longer
//     than WithHandshakeTimeout, drop the connection.
//
// # TLS
//
// Serve listeners (the unix socket the local VMs use) are plain: their
// access control is the socket's. ServeTLS listeners, configured by
// WithTLS, run FORCEDTLS with client certificates, and keep these
// invariants:
//   - Before NBD_OPT_STARTTLS and a TLS handshake in which the client's
//     certificate verified, nothing but STARTTLS and ABORT is served: every
//     other option is skipped unread and answered NBD_REP_ERR_TLS_REQD, and
//     NBD_OPT_EXPORT_NAME (which cannot carry an error) closes the
//     connection. No Lookup, Lister or Authorize is called before TLS.
//   - A failed handshake closes the connection (the ACK is sent, there is
//     no way back to plaintext). ServeTLS refuses a configuration that does
//     not require and verify client certificates, and the handshake is
//     checked for a verified chain anyway, whatever GetConfigForClient
//     returns.
//   - Bytes the client sent behind NBD_OPT_STARTTLS, before our ACK, close
//     the connection: plaintext must never be read as if it came through
//     TLS.
//   - STARTTLS once TLS is up, or with data, gets NBD_REP_ERR_INVALID.
//   - An export is opened only after Authorize allowed it: the hook runs
//     before the Lookup for INFO, GO and EXPORT_NAME (and again on the
//     resolved name if the Lookup maps the name to another export), and
//     NBD_OPT_LIST shows only the exports it allows. A refused client gets
//     the same NBD_REP_ERR_UNKNOWN "unknown export" as for a name that does
//     not exist, and no text from the Lookup (which can name the primary
//     and its epoch); the reason is logged. A client the hook allows gets
//     Lookup errors as on a plain listener. Without WithAuthorize, every
//     client whose certificate verified may open every export.
//   - Lookup, Lister and Authorize see the client's TLS state in their
//     context (ClientTLS), so a Lookup can keep to local clients what only
//     they may do, such as the first write of a migration window.
//
// Refusals are counted in Stats (TLSRequired, TLSHandshakeErrors,
// Unauthorized). Failed handshakes are logged at Debug only, since
// strangers knocking on a network port could otherwise flood the log;
// authorization refusals (a client with a valid certificate) at Info.
// crypto/tls has no vectored write, so a READ reply of up to 16 KiB is
// copied behind its header to go out as one TLS record instead of two.
//
// Structured replies are deliberately not offered. Their benefits are
// sparse reads (hole chunks), block status and error strings on reads;
// our volumes have no cheap allocation map to report, and simple replies
// are enough for correctness because a READ is fully read from the volume
// before its reply header is sent, so a failed read is always a clean
// error reply. Every client above falls back to simple replies.
//
// Transmission flags: HAS_FLAGS and SEND_FLUSH always; SEND_FUA, SEND_TRIM
// and SEND_WRITE_ZEROES on writable exports; READ_ONLY on read-only ones;
// CAN_MULTI_CONN when Export.MultiConn. SEND_FAST_ZERO is not advertised:
// a Volume cannot say whether zeroing is cheaper than writing, so clients
// are better off not asking. NBD_CMD_CACHE is accepted (validated, then a no-op) but
// not advertised. Block sizes default to 512/4096/32 MiB; only READ and
// WRITE are held to the maximum, and alignment is not enforced because
// volumes accept any offset.
//
// # Concurrency
//
// Each connection has one reader goroutine that parses request headers in
// order and reads a WRITE's whole payload before the next header, then
// hands the request to its own goroutine. At most WithMaxInflight requests
// (and WithMaxInflightBytes of payload) are in flight per connection;
// beyond that the reader stops reading the socket, which pushes back on
// the client. Replies go out in completion order, serialised by a mutex,
// each as one writev. NBD_CMD_DISC stops reading and waits for in-flight
// requests to be answered before closing. Flush needs no ordering of its
// own: a write is answered only after Volume.WriteAt returned, and
// Volume.Flush covers every write that completed before it was called.
// On shutdown (Serve's context, or Close) reading stops at once, in-flight
// requests get WithShutdownGrace to finish, and are then cancelled.
//
// # Errors
//
// Requests are validated before the volume sees them:
//   - unknown commands or flags (FUA is accepted on any command, NO_HOLE
//     on WRITE_ZEROES), BLOCK_STATUS, a READ or WRITE longer than the
//     maximum block size, or a zero-length READ: NBD_EINVAL;
//   - WRITE, WRITE_ZEROES or TRIM on a read-only export: NBD_EPERM;
//   - past the end of the export: NBD_ENOSPC for WRITE and WRITE_ZEROES,
//     NBD_EINVAL for READ, TRIM and CACHE (as the spec recommends);
//   - zero-length WRITE, TRIM and WRITE_ZEROES succeed without touching
//     the volume (the spec leaves them unspecified).
//
// A rejected WRITE's payload is still read and discarded, so the stream
// stays in step. A bad request magic or a truncated frame closes the
// connection without touching the volume.
//
// Volume errors map as follows: blockstore.ErrFrozen → NBD_EIO (the
// request was not applied and must never look successful);
// blockstore.ErrClosed, or cancellation by a stopping server →
// NBD_ESHUTDOWN; blockstore.ErrReadOnly or EROFS → NBD_EPERM;
// blockstore.ErrOutOfRange → NBD_ENOSPC for writes, NBD_EINVAL otherwise;
// ENOSPC, EDQUOT and EFBIG → NBD_ENOSPC; anything else, or a short read or
// write, → NBD_EIO.
//
// Lookup errors reach the client as NBD_REP_ERR_UNKNOWN with the error's
// text (such as "not the primary of volume X"), or NBD_REP_ERR_SHUTDOWN
// when they wrap ErrShutdown or the server is stopping; over TLS only
// once Authorize allowed the export. NBD_OPT_EXPORT_NAME
// cannot carry an error, so there a refusal closes the connection.
//
// # Why not github.com/pojntfx/go-nbd
//
// The go-nbd server we reviewed handles READ, WRITE and DISC only, one
// request at a time: no FLUSH, FUA, TRIM or WRITE_ZEROES (it syncs only on
// disconnect, so the CAN_MULTI_CONN it can advertise promises nothing), a
// backend error drops the connection instead of becoming an NBD error,
// and a failed READ is reported after a success header. Its backend
// interface carries no context and no flags. We need FUA and FLUSH for
// guest crash consistency, TRIM and WRITE_ZEROES with NO_HOLE for thin
// volumes, pipelined requests and a meaningful CAN_MULTI_CONN for
// throughput, and a precise mapping of our typed errors (a frozen or
// fenced volume must not look like a dead disk or, worse, a success), so
// we own this small protocol layer, test it against QEMU, libnbd and fio,
// and fuzz it.
package nbd
