// Command tandem is the admin CLI for a Tandem cluster. It talks to tandemd
// through the local unix socket, or to a remote node over mTLS (--server).
//
// Owner: the API maintainers.
//
// Invariant: the CLI reaches a cluster only through the admin API
// (internal/adminclient: the root-only unix socket, or mutual TLS with the
// bearer token), and imports no daemon, Raft or storage code: whatever it
// does, any API client can do.
package main
