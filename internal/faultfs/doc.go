// Package faultfs is a fault-injecting FUSE filesystem for tests: a
// passthrough ("loopback") of a backing directory, mounted where a test
// puts tandemd's data (or volumes) directory, so that the daemon's real
// file I/O meets real disk faults. It is test infrastructure: nothing in
// the product imports it.
//
// Owner: the test-infrastructure maintainers.
//
// # Faults
//
// Rules (Fault) are set and cleared at run time, each for a class of
// operations (OpRead, OpWrite, OpSync, OpFlush, OpMeta) on the paths that
// match a pattern, or the whole mount: fail with an errno (EIO, ENOSPC,
// …) without applying the operation, and/or wait a delay first (slow
// I/O). Counters count what was injected, for reports.
//
// # Power loss (the durability model)
//
// As Jepsen's LazyFS, the mount is a disk with a volatile write cache:
// file data written is kept in memory, in 4 KiB pages over the backing
// file's bytes, and reaches the backing file only when it is made
// durable: by fsync or fdatasync of the file, by a write on a descriptor
// opened O_SYNC or O_DSYNC, or by a write with RWF_DSYNC (the last two
// sync the whole file). PowerLoss drops everything else, so the backing
// directory then holds exactly the synced data. O_DIRECT changes nothing:
// a direct write is not durable until a sync either, as on a drive with
// a volatile cache. Every file is opened FOPEN_DIRECT_IO, so the kernel's
// page cache never holds data the mount has dropped, and attributes are
// not cached, so a file's size is always the mount's.
//
// Modelled as durable at once (not lost by PowerLoss): namespace changes
// (create, mkdir, rename, link, unlink, rmdir, symlink), truncate,
// fallocate (a punched or zeroed range drops the unsynced data in it) and
// attribute changes. So a renamed file never comes back under its old
// name after a power loss although, on a real filesystem, a rename not
// followed by a directory fsync may. Not modelled either: torn writes
// (a page is written whole or not at all), reordering of synced data,
// errors that a failed fsync makes sticky (an injected sync error leaves
// the data unsynced, so a later sync may still succeed; the blockstore
// makes its own failures sticky), fsync of a directory (passed to the
// backing directory, never faulted), O_TMPFILE (refused) and
// copy_file_range (refused, so the kernel copies through read and write).
// The backing file is not fsynced: "durable" means "in the backing file",
// since the host itself does not lose power. Past Options.MaxDirtyBytes a
// writing file's unsynced data is written back early, as a page cache
// under pressure does: it may then survive a power loss.
//
// # Running it
//
// Mount (in the test process) or the control server (Serve, Dial) for a
// mount owned by another process. Mounting needs root; it calls mount(2)
// directly, so no fusermount is needed. A mount is visible to processes
// started afterwards, including through `ip netns exec`, whose new mount
// namespace is a copy of the caller's (the root mount is private here, so
// later mounts do not propagate into it: mount first, then start).
//
// Invariants:
//   - after PowerLoss, every file reads back exactly the bytes that were
//     synced (by the rules above) before it, nothing written later that
//     was not synced;
//   - data that was synced is never lost, and a write or sync that fails
//     (injected or not) was not made durable by that call;
//   - Unmount is idempotent, writes unsynced data back first (a clean
//     shutdown), detaches a busy mount lazily, and leaves no mount behind.
package faultfs
