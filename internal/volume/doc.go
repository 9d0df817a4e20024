// Package volume runs the volumes of one node and the cluster-wide volume
// policy: the local replicas, each volume's Raft shard replica (or
// witness), the replication primary while the shard's record makes this
// node primary, the NBD exports, planned handovers for live migration
// (docs/design.md I5), online verify, and the volume API's logic (create,
// place, delete, promote, resync, show and the volume health), and the
// volumes on Ceph RBD with their external storage (rbd.go).
//
// Owner: the volume maintainers. internal/daemon wires it: it builds one
// Manager from the node's state.State and a Config of the few things only
// it knows (the data directory's layout, the quorum timeout, the peer call
// with its reconnect retry), serves the replication and NBD ports through
// Target and Export, and keeps thin gRPC adapters over the exported
// methods.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon;
//   - a node serves a volume as primary (replication, NBD) only at an epoch
//     a linearizable read of the volume's shard confirmed, and never while
//     it is self-fenced (state.Fence);
//   - a secondary's NBD export is refused unless the shard's record names
//     it the migration target; a stale local record is refreshed from the
//     shard (bounded) before a refusal;
//   - only a client of the unix socket (the node's own QEMU) may take a
//     volume over by writing in its migration window; a TLS client of the
//     TCP export gets the window read-only;
//   - on the TCP export a client opens only what its certificate allows
//     (AuthorizeNBD: an export certificate its URI SAN volumes, an admin
//     certificate all, anything else none), and an export certificate is
//     handed out only once it is recorded in the metadata shard;
//   - an RBD volume is open for writing only on the owner its catalog
//     entry names, with the image's exclusive lock; another node becomes
//     the owner only by Takeover (blocklist, break, acquire) and then the
//     owner commit at the epoch it read, in that order; every client
//     Tandem blocklists is in the catalog before it is in Ceph, and its
//     entry is removed only by its own node once none of its processes
//     that may hold it is left (rbdunblock.go); a storage's
//     key is proposed only sealed, and a failed RBD create leaves no image
//     and no entry;
//   - a VM's RBD disk is never opened by tandemd (rbd_vm.go): its VM's
//     QEMU on the owner is the one writer; its owner moves without
//     blocklisting only after the old owner answered (MoveRBDOwner, a
//     stopped VM or a finished migration), otherwise by a takeover that
//     blocklists every other watcher;
//   - every mutation of the catalog checks quorum first and changes nothing
//     when it fails; a volume being deleted stays in the catalog (as
//     deleting) until every node has removed its replica, and a node's
//     sweep removes replicas only on a linearizable catalog read.
package volume
