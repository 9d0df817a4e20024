// Package replication makes a volume synchronously replicated, in the style
// of DRBD protocol C: the primary sends every write to its local store and
// to each in-sync secondary in parallel, and acknowledges it only when all of
// them have applied it; FLUSH and FUA are made durable on every in-sync
// replica before they are acknowledged.
//
// Invariants (../shared/DESIGN.md §4) and where they live:
//
//   - I1 one writer: every frame carries the sender's epoch. A secondary
//     applies a frame only if its epoch is the volume's current epoch and the
//     sender (authenticated by its TLS certificate) is that epoch's primary;
//     otherwise it answers StatusStaleEpoch/StatusNotPrimary and the primary
//     surfaces ErrStaleEpoch. On a higher epoch than it knows, the secondary
//     refreshes its view with a linearizable read before deciding.
//   - I2 nothing acknowledged is lost: when a secondary stops answering, the
//     primary freezes acknowledgements, commits "peer Outdated" through the
//     volume's Raft shard, marks the peer's dirty bitmap for every write the
//     peer did not confirm, and only then acknowledges. Without quorum the
//     commit never happens and nothing is acknowledged.
//   - I4 incremental resync: the dirty bitmap is persisted before the write
//     it covers is acknowledged; a returning peer gets exactly those regions.
//
// Wire protocol. A framed protocol over TLS on its own port rather than gRPC
// streams: a 4 KiB write costs one 40-byte header and one syscall each way,
// with no per-message allocation, HTTP/2 flow control or protobuf encoding,
// and the ordered byte stream gives write ordering for free. Overlapping
// writes keep their order because the primary assigns them a sequence under
// one lock, writes locally in that order (ordered range lock), and each
// secondary applies its stream in order. See wire.go for the frame layout.
package replication
