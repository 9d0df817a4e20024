// Package apierr maps errors of the consensus layer and of the Ceph RBD
// backend (blockstore/rbd) to gRPC status errors,
// so every subsystem behind the admin and peer APIs answers the same code
// and text for the same failure.
//
// Owner: the daemon maintainers (internal/daemon and the subsystems split
// out of it). Invariant: it is a pure mapping; it holds no state and makes
// no decision beyond choosing a status code.
package apierr
