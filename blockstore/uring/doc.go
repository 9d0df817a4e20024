// Package uring does positional reads and writes (and fdatasync) of one
// file through a Linux io_uring, so that the goroutine waiting for an
// O_DIRECT transfer parks on a channel instead of holding its OS thread in
// a blocking pread/pwrite. A blocking pwrite costs more than the I/O: the
// thread sleeps until the device completes (a context switch each way), and
// while it sleeps Go's sysmon hands its P to another thread (futex
// wake-ups, sysmon's nanosleep). Here a caller queues a request and sleeps
// on a channel; the first caller to find no submission under way submits
// every queued request with one io_uring_enter (so concurrent requests are
// batched), and one reaper goroutine, woken through Go's netpoller by an
// eventfd registered with the ring, hands each completion to its caller.
//
// Owner: the storage maintainers.
//
// Why raw syscalls (golang.org/x/sys/unix) rather than giouring or
// iouring-go: the ring is used for four opcodes (READ, WRITE, FSYNC, NOP)
// on one registered file, a few hundred lines over the kernel ABI; both
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
// Why the eventfd and the netpoller rather than a reaper blocked in
// io_uring_enter(GETEVENTS): BenchmarkWrite4K, 4 KiB O_DIRECT overwrites
// from 32 goroutines on ext4 over virtio, this 2-core machine, 3 runs each
// with the machine otherwise idle (time per write, CPU per write):
//
//	pwrite (os.File.WriteAt)          20.5-28.3 us   17.8-25.0 us CPU
//	ring, eventfd through netpoller   10.2-10.9 us    9.0-9.9 us CPU
//	ring, reaper thread in enter      11.6-12.7 us   11.0-13.0 us CPU
//
// Measured in tandemd (bench/replication A/B, whole runs alternating with
// the blocking build, 2 rounds, fio through NBD; CPU per write of the
// volume's tandemd processes; candidate/baseline per round):
//
//	every request through the ring (uring-always):
//	  1 replica,  QD32:          CPU/write 0.65-0.71x, IOPS 1.20-1.38x, p50 0.73-0.86x
//	  2 replicas, QD32:          CPU/write 0.90-1.11x, IOPS 0.77-0.96x
//	  1 replica,  QD1 write+flush: write p50 1.64-1.70x (101 -> 169 us), CPU/write 1.56-1.73x
//	  2 replicas, QD1 write+flush: write p50 1.09-1.26x
//
// The ring pays when requests overlap at the disk and costs latency when
// one runs alone: each completion then wakes the submitting thread (its
// task work), the netpoller's thread (the eventfd) and the caller, each
// possibly on an idle vCPU. blockstore therefore sends a request through
// the ring only when another is in flight (IOURing, its default):
//
//	2 replicas, QD32:          CPU/write 0.72-0.77x (99.3 -> 73.7 us), IOPS 1.16-1.20x, p50 0.81-0.85x
//	1 replica,  QD32:          CPU/write 0.66-0.68x (33.0 -> 22.0 us), IOPS 1.31-1.55x, p50 0.67-0.81x
//	2 replicas, QD1 write+flush: write p50 0.98-1.03x, CPU/write 0.94-1.02x
//	1 replica,  QD1 write+flush: write p50 0.68-1.04x, CPU/write 0.66-1.05x
//
// (qemu-nbd, which runs none of this code, came out at 0.82-0.95x IOPS
// in the candidate's runs of both A/Bs: about the noise of a rate.)
//
// The ring has a file description of its own (Open): its teardown is
// asynchronous, and a reference it kept to the caller's description would
// hold that description's flock after the caller closed it.
//
// Invariants:
//   - ReadAt and WriteAt transfer all of p or return an error: a short
//     transfer is resubmitted for the rest, a transfer of 0 bytes is an
//     error (io.ErrUnexpectedEOF for a read, io.ErrShortWrite for a write);
//   - a failed request returns an *os.PathError whose Err is the kernel's
//     errno (syscall.Errno: EIO, ENOSPC, ...), as os.File.WriteAt and
//     pwritev2 report it, so callers classify errors exactly as with the
//     blocking calls;
//   - WriteAt with RWF_DSYNC is pwritev2(RWF_DSYNC) and Datasync is
//     fdatasync (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC): durable when
//     they return without error, failing with the errno fdatasync would;
//   - p is referenced by the ring until its request completes, and a caller
//     never abandons a request it submitted (no cancellation), so the
//     kernel never writes into memory Go has reused;
//   - at most Entries requests are in flight, so the completion queue
//     (twice as large) never overflows; more callers wait for a slot;
//   - Close waits for every request in flight and then fails new ones with
//     os.ErrClosed; it does not close the caller's file, and the caller's
//     file may be closed first.
//
// The ring is set up without COOP_TASKRUN, SINGLE_ISSUER or DEFER_TASKRUN:
// goroutines submit from whichever thread they run on and never wait in
// io_uring_enter, so completion task work must be allowed to interrupt the
// submitting thread.
package uring
