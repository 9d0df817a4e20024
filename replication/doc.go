// Package replication makes a volume synchronously replicated, in the style
// of DRBD protocol C: the primary sends every write to its local store and
// to each in-sync secondary in parallel, and acknowledges it only when all of
// them have applied it; FLUSH and FUA are made durable on every in-sync
// replica before they are acknowledged.
//
// Owner: the storage maintainers.
//
// Invariants (docs/design.md §4, which numbers them I1-I5) and where they
// live:
//
//   - I1 one writer: every frame carries the sender's epoch. A secondary
//     applies a frame only if its epoch is the volume's current epoch and the
//     sender (authenticated by its TLS certificate, through the Authorize
//     function the daemon supplies) is that epoch's primary; otherwise it
//     answers StatusStaleEpoch/StatusNotPrimary and the primary surfaces
//     ErrDeposed (as it does when its Fencer reports ErrStaleEpoch or
//     ErrNotPrimary). On a higher epoch than it knows, the secondary
//     refreshes its view with a linearizable read before deciding. Frames
//     are checked when read but applied by workers, so a new session (new
//     epoch, or a reconnect) first supersedes the older ones, whose frames
//     not yet applied are refused, and waits until their frames being
//     applied are done: no old frame lands after a new session's write.
//     Superseded by a newer epoch, a session is refused StatusStaleEpoch
//     (deposed); by a connection of its own epoch, StatusSuperseded, which
//     the primary handles as a lost link (fence, resync): a connection it
//     gave up on may be accepted late. No session supersedes a newer
//     epoch's.
//     Where: secondary.go (check, Secondary.accept, Secondary.checkFrame),
//     session.go (sessionGate);
//     peer.go (Primary.receiver) and fence.go (Primary.fence) call
//     Primary.depose in primary.go.
//   - I2 nothing acknowledged is lost: when a secondary stops answering, the
//     primary freezes acknowledgements, commits "peer Outdated" through the
//     volume's Raft shard, marks the peer's dirty bitmap for every write the
//     peer did not confirm, and only then acknowledges. Without quorum the
//     commit never happens and nothing is acknowledged.
//     Where: order.go (Primary.submit: waiting out a freeze, fan-out, dirty
//     marking for fenced peers, waiting for every peer); fence.go
//     (Primary.fail, Primary.fence).
//   - I4 incremental resync: the dirty bitmap is persisted before the write
//     it covers reaches any disk; a returning peer gets exactly those
//     regions. A restarted primary marks its whole activity log in every
//     peer's bitmap before replaying it. Once a request is sent to a peer,
//     its local I/O runs even if the caller gave up, so the replicas never
//     differ without a dirty bit saying so.
//     Where: fence.go (Primary.fence marks what the peer did not confirm),
//     order.go (Primary.submit marks writes fenced peers miss), activity.go
//     (the activity log), primary.go (Primary.replayActivity), resync.go
//     (Primary.resync, Primary.DiscardPeer), started by the reconnect loop
//     in peer.go (Primary.startReconnect).
//
// Local disk failure (DRBD's on-io-error detach; detach.go). A disk fault
// on the primary (EIO/ENOSPC on a write, a failed sync or bitmap write, a
// read error) does not reach the guest while an in-sync peer exists: the
// primary records the fault before the failed request releases its range,
// freezes acknowledgements, fences peers resyncing from that disk, and
// commits its own replica Failed through Fencer.Detach (the shard refuses
// unless another replica is UpToDate). Diskless, it sends nothing to the
// local disk; a request succeeds when every in-sync peer has it and at
// least one did (I2 with the local replica out of the in-sync set), else it
// fails with EIO (ErrDiskless); reads go to an in-sync peer (FrameRead).
// Losing one of two in-sync peers while diskless fences it off (a full
// resync after the re-attach); losing the last one stops the primary (EIO)
// rather than outdating the only replica with the data. It serves diskless
// rather than handing over: the VM keeps running with no pause, and moving
// it (a live migration) stays the operator's choice; Reattach brings the
// disk back by a full copy from a peer ('tandem volume resync').
//
// Files of the primary side: primary.go holds the Primary type, its Config,
// construction, the public I/O methods, Close, Status, Retire and depose;
// order.go the request (req) and its ordering: sequence, overlap ordering
// of in-flight writes (blockstore/rangelock, as the secondary's apply and
// the local store use), the submit path; peer.go the peer connection: its
// state, per-peer queue, send, sender and receiver goroutines, watchdog,
// connect and hello, and the reconnect loop; plain.go leaving TLS for a
// plain data stream; fence.go fence-peer: outdating
// a failed peer through the Fencer and marking what it missed dirty;
// resync.go resync, Repair, Quiesced and DiscardPeer; activity.go the
// activity log; detach.go the local disk's detach, diskless reads and
// Reattach. The secondary side is secondary.go; wire.go and cork.go
// are shared. grow.go: a secondary smaller than its primary's hello grows
// once the hello's epoch and sender are confirmed; a larger one is
// accepted (a grow the primary has not reached yet).
//
// Layering: the data path depends on nothing above it (internal/layers
// enforces it): no Raft, gRPC, PKI or daemon code. The replica disk states
// (ReplicaState: UpToDate, Outdated, Inconsistent, SyncSource, SyncTarget,
// Failed)
// and the refusals that depose a primary (ErrStaleEpoch, ErrNotPrimary) are
// defined here, and consensus, which commits them in the volume's Raft
// shard, aliases them; the shard itself is reached only through Authority
// and Fencer, and peer certificates are checked by Authorize.
//
// Wire protocol. A framed protocol over TLS on its own port rather than gRPC
// streams: a 4 KiB write costs one 40-byte header and one syscall each way,
// with no per-message allocation, HTTP/2 flow control or protobuf encoding,
// and the ordered byte stream gives write ordering for free. Overlapping
// writes keep their order because the primary assigns them a sequence under
// one lock, writes locally in that order (ordered range lock), and each
// secondary applies its stream in order. See wire.go for the frame layout.
//
// Plain data stream (plain.go). When both ends ask for it (Hello.Plain from
// Config.PlainStream, HelloAck.Plain from Target.PlainStream; the daemon's
// cluster setting replication.data_stream), the frames after the HelloAck
// go unencrypted on the TCP connection under the TLS session; the
// handshake, the Hello and the HelloAck stay in TLS, so I1's sender
// identity is authenticated as before. Invariants it relies on: the
// primary sends nothing after its Hello until it has read the HelloAck,
// and the secondary nothing after the HelloAck until the primary's first
// frame, so neither TLS layer can hold bytes of the plain stream (leaveTLS
// and the secondary's bufio check refuse otherwise); once a connection has
// left TLS, its tls.Conn is never written or closed again (a close_notify
// would land in the plain stream): what either side closes is the
// connection under it.
//
// Latency at queue depth 1, where every cross-CPU wake-up costs 20-50 µs on
// a small VM (measured: a TCP ping-pong between two network namespaces is
// 10 µs on one CPU and 55 µs across two):
//   - the submitting goroutine writes its own frame when the stream is idle
//     (Primary.send) instead of waking a sender goroutine;
//   - a secondary applies a lone frame on its reader goroutine and acks it
//     there; parallel applies share the stream through a batching writer;
//   - after acking a write that a flush is predicted to follow, the
//     secondary makes it durable while waiting for that flush
//     (blockstore.LocalVolume.SyncAhead), so the flush costs only its
//     network hops.
//
// Large frames (sequential I/O) are applied one at a time in order, but the
// next is read and decrypted while the previous one is written.
//
// CPU per request, which bounds queue depth 32 and sequential throughput on
// a small node (measured with bench/replication -profile):
//   - requests run on pooled goroutines (internal/workers): a new goroutine
//     per request regrew its stack by copying, 10% of each node's CPU;
//   - write frames come from a size-class pool and are recycled when the
//     last holder (submitter, peer queue, send batch) lets go: allocating
//     1 MiB frames cost 17-20% of the primary's CPU in GC and clearing;
//   - the primary corks the connection under TLS while it sends a batch
//     (CorkConn), so 16 KiB TLS records leave in writes of up to 256 KiB
//     (and a plain stream's frames, written to the CorkConn directly, in
//     the same batches). Buffering the secondary's reads the same way
//     measured no gain;
//   - a write hinted blockstore.More (the NBD server has the next request
//     buffered already) leaves its frame to the sender goroutine, which
//     writes the burst in one batch: 0.25 fewer syscalls per write at
//     queue depth 32. Unhinted (QD1) writes still send inline.
package replication
