// Package peers is the node's pool of connections to its peers' backend
// gRPC API: one mutual-TLS connection per peer backend address, the
// calls made over it (Call, with one retry after a failed dial), and the
// pings behind the node table (Probe).
//
// Owner: the cluster-membership maintainers (the peer API's transport);
// internal/daemon builds one Pool each time it starts its Raft host and
// closes it when it stops or resets the node.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon: it
//     gets the node's client TLS identity and its logger in its Config;
//   - every connection is mutual TLS with the identity Config.ClientTLS
//     returns when the connection is first made;
//   - Call retries only a call that failed to connect (dialFailed), so the
//     peer never saw it and trying again cannot apply it twice, and only
//     after one fresh connection attempt (reconnect), which never waits out
//     gRPC's backoff: a failure seen after the reset is the fresh
//     attempt's, except on a connection failing already, where gRPC shows
//     no change for a failed attempt and a grace period bounds the wait;
//   - a nil *Pool is a node in no cluster: Client and Call answer
//     FailedPrecondition, Probe reports nothing, Close does nothing.
package peers
