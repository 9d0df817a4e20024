// Package workers runs short tasks on reused goroutines.
//
// Owner: the daemon maintainers.
//
// A goroutine per request starts with a small stack, and a request that goes
// through TLS, the block store and a syscall grows it by copying, every time:
// on the 2-vCPU test machine that was 10% of a replicating node's CPU at
// queue depth 32. A worker keeps its grown stack from one task to the next.
//
// Invariant: Go never blocks and never drops a task: it hands fn to an
// idle worker or starts a new one, and after Close it still runs fn, on a
// goroutine of its own. The pool does not bound concurrency (its callers
// do), and a worker exits only after Close, once its task is done.
package workers
