// Package blockstore holds Tandem's block storage: the Volume interface every
// backend implements, the local backend (a preallocated file or a raw block
// device opened with O_DIRECT, with explicit durability), and each volume's
// on-disk metadata: generation identifiers, per-peer dirty bitmaps and the
// last epoch seen. Subpackages: nbd (the NBD export), rangelock (the
// ordering of overlapping in-flight writes, shared with replication) and,
// later, rbd (Ceph).
//
// The interface is the seam between the front end (NBD export), replication
// (which implements Volume on top of a local Volume and its peers) and the
// backends, so each can be tested with real clients on its own.
package blockstore
