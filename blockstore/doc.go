// Package blockstore holds Tandem's block storage: the Volume interface every
// backend implements, the local backend (a preallocated file or a raw block
// device opened with O_DIRECT, with explicit durability), and each volume's
// on-disk metadata: generation identifiers, per-peer dirty bitmaps and the
// last epoch seen. Subpackages: nbd (the NBD export), rangelock (the
// ordering of overlapping in-flight writes, shared with replication) and,
// later, rbd (Ceph).
//
// Owner: the storage maintainers.
//
// The interface is the seam between the front end (NBD export), replication
// (which implements Volume on top of a local Volume and its peers) and the
// backends, so each can be tested with real clients on its own.
//
// Invariants:
//   - a write is durable once it returned with FUA, or once a Flush called
//     after it completed returned; two overlapping writes in flight at the
//     same time apply in the order their calls began (the Volume contract,
//     which every backend and replication keep);
//   - a failed sync is sticky: once an fdatasync (or an RWF_DSYNC write)
//     failed, every later Flush and FUA write of that LocalVolume fails,
//     since the failed sync may have lost other writes' data, until
//     ResetSyncError, which only a caller about to rewrite every block
//     calls (replication re-attaching a detached disk);
//   - MarkDirty and SetAllDirty return only once the bitmap blocks they set
//     are on disk and synced, so replication may acknowledge a write a peer
//     missed right after; ClearDirty reaches the disk lazily, and a crash
//     before that only brings bits back (more resync, never lost data);
//   - the superblock and every bitmap block carry a CRC32C: metadata that
//     fails its check or is inconsistent makes Open fail with
//     ErrCorruptMetadata rather than guess, except that of the two
//     superblock copies (written alternately) Open takes the valid one with
//     the higher sequence number, so a torn superblock write falls back to
//     the state before it; a request that fails with ErrFrozen was not
//     applied;
//   - Grow (grow.go) commits a larger size at one point, the write of the
//     new superblocks; a crash before it leaves the old volume whole (Open
//     truncates back), a crash after it the new one (Open zeroes the old
//     metadata left inside the data area), so no byte past the old size
//     ever reads as anything but zeroes or data written there, and no
//     bitmap is shorter than its data area; shrinking is refused;
//   - it imports nothing above the data path (internal/layers).
package blockstore
