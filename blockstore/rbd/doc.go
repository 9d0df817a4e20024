// Package rbd is the Ceph RBD backend: a blockstore.Volume over librbd
// (through go-ceph, so cgo), the administration of a pool's images, and
// storage-side fencing with Ceph's exclusive lock and OSD blocklist (issue
// 15). internal/volume runs RBD volumes with it (storage add, create,
// the owner's export, takeover) and VMs on RBD (whose QEMU opens the
// image itself; a takeover of one uses TakeoverAll).
//
// Owner: the storage maintainers.
//
// # Builds
//
// The Ceph code builds only with the "ceph" tag, plus go-ceph's tag for
// the Ceph release of the libraries (Debian 12: "pacific"); make builds
// and tests with -tags ceph,pacific by default (`make CEPH=0` without).
// Without the tag the package keeps its API, Built is false and Connect
// and Open fail with ErrNotBuilt, so callers need no tags of their own.
//
// # Connections
//
// Pool is one administrative connection (create, list, stat, resize,
// remove, blocklist). Every Volume has a rados connection of its own, so
// the client address that a blocklist entry names fences exactly one
// opener of one image. Connections carry the cephx key in memory only
// (never a keyring file) and bounded timeouts: connecting and monitor
// commands fail with ErrUnavailable after Config.MonTimeout, OSD requests
// after Config.OSDTimeout. librbd's cache is off: a write is on every
// replica when acknowledged.
//
// # Errors
//
// Every error wraps one of the package's errors for its cause (ErrInvalid,
// ErrUnavailable, ErrAuth, ErrNoPool, ErrNotFound, ErrExists, ErrNoSpace,
// ErrBlocklisted, ErrLockHeld, ErrBusy) and keeps Ceph's own error in the
// chain. A stale writer's request fails with ErrBlocklisted (EBLOCKLISTED).
//
// Invariants:
//   - single writer: a writing opener holds the image's exclusive lock
//     (Open with Exclusive, or Acquire); librbd does not hand a lock
//     acquired this way to another client on request, so another opener's
//     writes fail with ErrLockHeld until it takes the image over;
//   - blocklist before break: Takeover first blocklists every current lock
//     owner's address and waits for the OSD map that holds the entry, only
//     then breaks the lock, then acquires it. Every request of the new
//     owner carries that map, and an OSD catches up to a request's map
//     before serving it, so no request of the old owner is applied after
//     one of the new owner, even if the old owner is still running (a
//     paused or partitioned node); its requests fail with ErrBlocklisted.
//     (One that reaches an OSD still without the map, before any of the
//     new owner's there, is ordered before them, as a write in flight at
//     a crash is.);
//   - TakeoverAll blocklists every other watcher too, lock owner or not,
//     before it breaks the lock;
//   - a blocklist entry is removed only by an explicit BlocklistRemove (or
//     its expiry, a month by default), never as a side effect;
//   - Create checks the request (name, size, room in the pool) before
//     making anything, and removes an image it made if a later step
//     fails: a failed Create leaves no image behind;
//   - every image is made with Ceph's default features (layering,
//     exclusive-lock, object-map, fast-diff, deep-flatten), set
//     explicitly, and checked after creation;
//   - the Volume contract of blockstore holds: overlapping writes in
//     flight apply in the order their calls began (a range lock), a write
//     is durable when it returns, and requests past the end fail with
//     blockstore.ErrOutOfRange before reaching Ceph;
//   - it is the data path (internal/layers): no Raft, gRPC, PKI, compute
//     or daemon.
package rbd
