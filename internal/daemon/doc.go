// Package daemon is tandemd: it wires the layers together (Raft shards from
// consensus, the data path from blockstore, blockstore/nbd and replication,
// compute, fencing, ha, netannounce) behind the admin and peer gRPC APIs.
//
// Owner: the daemon maintainers.
// Invariants:
//   - it is the top of the layering (internal/layers): only cmd/ imports it,
//     and the packages below it never reach up. What they need from above
//     they take as small interfaces and functions the daemon implements:
//     replication gets its Authority and Fencer from the volume's Raft shard
//     and its peer authentication (replication.Authorize) from internal/pki
//     (api.ReplicationPeer), so the data path carries no PKI, gRPC or
//     Raft code;
//   - every connection between nodes is mutual TLS with a node certificate
//     of the cluster's CA (peer gRPC except Join, the Raft transport, the
//     replication port); the admin API over TCP also needs an admin token
//     (docs/design.md §7);
//   - it is being split into one package per subsystem (issue 12): they
//     share internal/state, never *Daemon. Cluster membership (create,
//     join, admit, node removal, the expected-votes guard) lives in
//     internal/membership; the daemon implements its Init (files, Raft
//     host, servers); cluster status, configuration and join tokens live
//     in internal/cluster. Every gRPC service adapter (admin and peer) and
//     the servers' authentication live in internal/api, which maps every
//     error through internal/apierr.From; the daemon builds the servers,
//     fills api.Config and registers api.Services on them, and keeps only
//     what rewrites its own Raft host or reads its files (the
//     expected-votes override); the health report is internal/cluster's. The VM manager (libvirt,
//     crash restarts, VM placement, migration, node maintenance) lives in
//     internal/vmm; vmmdeps.go wires it (the volume manager as is).
//     HA (self-fence lease, watchdog, failure detector, fence -> promote
//     -> restart) lives in internal/recovery, over the Volumes and VMs of
//     recoverydeps.go.
//     The volumes (replicas, shards, primaries, NBD exports, handover,
//     verify, the volume API's policy) live in internal/volume
//     (volumedeps.go wires it).
//     The peer pool (one mutual-TLS connection per peer, Call with its
//     retry after a failed dial, the node table's pings) is internal/peers.
//     The data directory's files (identity, TLS material, admin
//     credentials, atomic writes) live in internal/nodedir.
//     The Prometheus metrics (gauges, proposal histogram) live in
//     internal/metrics.
package daemon
