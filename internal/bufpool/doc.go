// Package bufpool recycles byte buffers in power-of-two size classes, so a
// busy data path does not allocate (and the GC clear and scan) a fresh
// buffer per request: at 1 MiB writes that cost more CPU than the copy.
//
// Owner: the daemon maintainers.
//
// Invariants: Get(n) returns a slice of length n, contents undefined; Put
// pools a buffer only when its capacity is exactly a size class, so a
// recycled buffer always fits its class, and drops any other; with
// Pool.Align set, every buffer Get allocates starts at a multiple of Align.
// A buffer must not be used after Put.
package bufpool
