// Package batchwrite lets many goroutines send small messages (replies,
// acknowledgements) on one stream with few write syscalls.
//
// Owner: the daemon maintainers.
//
// A sender that finds the stream idle writes its message itself, with no
// hand-off to another goroutine (the common case at queue depth 1). A
// sender that finds a write in progress appends its message to a buffer and
// returns; the goroutine doing the write sends everything that accumulated
// meanwhile in one more write before it leaves. Under load the batch grows
// with the time a write takes, so the syscall count per message falls
// exactly when it matters, and no timer ever delays a message.
//
// Invariants:
//   - one goroutine at a time writes to the stream, and messages go out
//     whole, in the order their Write calls queued them;
//   - a message written with flush true is written before the write in
//     progress ends (or the stream has failed): no timer delays it;
//   - the first write error is sticky: every later Write returns it and
//     nothing more is written.
package batchwrite
