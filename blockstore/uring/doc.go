// Package uring does positional reads and writes of one file through a
// Linux io_uring, so that the goroutine waiting for an O_DIRECT transfer
// parks on a channel instead of holding its OS thread in a blocking
// pread/pwrite. A blocking pwrite costs more than the I/O: the thread sleeps
// until the device completes (a context switch each way), and while it
// sleeps Go's sysmon hands its P to another thread (futex wake-ups, sysmon's
// nanosleep). Here a caller queues a request and sleeps on a channel; the
// first caller to find no submission under way submits every queued request
// with one io_uring_enter (so concurrent requests are batched), and one
// reaper goroutine, woken through Go's netpoller by an eventfd registered
// with the ring, hands each completion to its caller.
//
// Owner: the storage maintainers.
//
// Why raw syscalls (golang.org/x/sys/unix) rather than giouring or
// iouring-go: the ring is used for three opcodes (READ, WRITE, NOP) on one
// registered file, which is a few hundred lines over the kernel ABI; both
// libraries are unmaintained snapshots that the module proxy serves only by
// pseudo-version, and neither offers the eventfd-through-netpoller reaping
// this package is for.
//
// Why one ring per file (per blockstore.LocalVolume) rather than per
// process: its life is the volume's (closing the volume tears it down, no
// shared owner, no package-level state), the file is registered with it
// (IOSQE_FIXED_FILE: no fget/fput per request), and a node has a handful of
// volumes, each costing a few pages and one goroutine.
//
// Invariants:
//   - ReadAt and WriteAt transfer all of p or return an error: a short
//     transfer is resubmitted for the rest, a transfer of 0 bytes is an
//     error (io.ErrUnexpectedEOF for a read, io.ErrShortWrite for a write);
//   - a failed request returns an *os.PathError whose Err is the kernel's
//     errno (syscall.Errno: EIO, ENOSPC, ...), as os.File.WriteAt and
//     pwritev2 report it, so callers classify errors exactly as with the
//     blocking calls;
//   - WriteAt with RWF_DSYNC is pwritev2(RWF_DSYNC): durable when it
//     returns without error;
//   - p is referenced by the ring until its request completes, and a caller
//     never abandons a request it submitted (no cancellation), so the
//     kernel never writes into memory Go has reused;
//   - at most Entries requests are in flight, so the completion queue
//     (twice as large) never overflows; more callers wait for a slot;
//   - Close waits for every request in flight and then fails new ones with
//     os.ErrClosed; it does not close the file.
//
// The ring is set up without COOP_TASKRUN, SINGLE_ISSUER or DEFER_TASKRUN:
// goroutines submit from whichever thread they run on and never wait in
// io_uring_enter, so completion task work must be allowed to interrupt the
// submitting thread.
package uring
