// Package membership decides who belongs to the cluster: it admits a
// joining node (on the member it asks), removes a node after its safety
// checks, and guards and records the expected-votes override.
//
// Owner: the cluster-membership maintainers. internal/daemon wires it: it
// builds one Manager from the node's state.State and serves the admin and
// peer gRPC calls through it.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon: it
//     works on the shared state.State and on the Volumes it is handed; the
//     Raft host itself (starting, stopping and rewriting it) stays wiring
//     in the daemon;
//   - every mutation checks quorum first and changes nothing when it fails;
//   - a join token is checked against this cluster's CA before quorum is
//     asked or the token consumed, and is consumed (Meta.Join) before a
//     certificate is signed or the Raft group changed;
//   - a removal is recorded in the metadata (so a running node learns it)
//     before the node leaves the Raft group, and is refused while it would
//     lose or strand something (Removal risks) unless forced.
package membership
