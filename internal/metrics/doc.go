// Package metrics is tandemd's Prometheus metrics: the metadata shard's
// state as this node sees it (membership, leader, term, applied index),
// the Raft proposal latency histogram, the count of refused join attempts
// by reason, and the Go runtime and process collectors, served on the
// metrics port.
//
// Owner: the observability maintainers. internal/daemon wires it: it fills
// Config with functions over its cluster handles, serves Handler and hands
// ObservePropose to the Raft host (consensus.HostConfig.OnPropose).
//
// Invariants:
//   - the gauges read live state at scrape time through Config, so nothing
//     on the hot path updates them and a scrape never blocks a proposal;
//     ObservePropose is the only hot-path call (JoinRefused is a counter
//     increment on the refusal path);
//   - a scrape before the node is in a cluster, or while its Raft host is
//     starting, reads zeros and never fails or panics;
//   - metric names, help texts and labels are an interface: dashboards,
//     bench/ and the e2e tests scrape them, so a change to one is a change
//     of that contract (metrics_test.go pins them);
//   - it holds no *daemon.Daemon and no package state: every registry is
//     the Metrics' own.
package metrics
