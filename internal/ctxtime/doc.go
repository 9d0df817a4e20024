// Package ctxtime holds waits that end early with their context.
//
// Owner: the daemon maintainers.
//
// Invariant: no wait outlives its context: each returns at the latest
// when ctx ends, with ctx's error, and starts no goroutine.
package ctxtime
