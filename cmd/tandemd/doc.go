// Command tandemd is the Tandem node daemon: it holds the node's Raft
// replicas, serves the admin API and talks to its peers on the backend network.
//
// Owner: the appliance maintainers.
//
// Invariant: the daemon starts only from a complete, valid configuration:
// flags override the file's settings before the defaults are derived and
// the configuration is validated, and any problem ends tandemd (exit code 1,
// 2 for bad flags) before the daemon is built.
package main
