// Package raftnet is the Raft transport between tandemd hosts: dragonboat's
// message batches and snapshot chunks over TLS connections whose
// configuration the caller supplies.
//
// Owner: the consensus maintainers.
//
// Why not dragonboat's own TCP transport: it builds its TLS configuration
// from three files when the host starts, so it can neither check a
// presented certificate against the cluster's revocation list, nor tell a
// node certificate from an admin one (any client certificate of the CA
// passes), nor pick up a renewed certificate or a rotated CA without
// restarting every shard. dragonboat's Expert.TransportFactory exists for
// this; the Transport above the module (deployment ID, batching, retries,
// snapshot streaming) stays dragonboat's.
//
// Wire format, per connection: a 6-byte preamble ("TDRT", version 1, the
// kind: 1 message batches, 2 snapshot chunks), then frames of a 4-byte
// big-endian length and that many bytes of the protobuf encoding of a
// raftpb.MessageBatch or raftpb.Chunk. TLS gives integrity, so frames carry
// no checksum of their own. One direction only: the dialer sends, the
// listener receives.
//
// Invariants:
//   - no byte reaches dragonboat from a connection whose TLS handshake the
//     caller's server configuration did not accept (ServerTLS is consulted
//     for every connection, so renewed certificates and a rotated CA apply
//     to the next handshake);
//   - a malformed preamble, an oversized frame (over MaxFrame) or an
//     undecodable frame closes that connection and nothing else; decoding
//     never allocates more than the frame's announced size, bounded by
//     MaxFrame;
//   - Close stops the listener and every connection it accepted, and
//     returns only after their goroutines have exited;
//   - with two hosts on one Factory (sharing the Raft address), every
//     received message and chunk reaches exactly one of them: the second
//     host's when Factory.OnSecond names its shard, else the first's;
//   - the transport keeps the peer certificate of every open connection,
//     accepted or dialed, so Recheck can close those a check refuses now
//     (a certificate revoked since the handshake).
package raftnet
