// Package daemon is tandemd's wiring: it binds the listeners, starts the Raft
// host and the subsystems in order, serves the admin and peer gRPC APIs built
// by internal/api, and stops everything in the reverse order. It makes no
// decision of its own about volumes, VMs, HA or membership.
//
// Owner: the daemon maintainers.
//
// The subsystems share internal/state (state.State) and never see the
// daemon: internal/membership (create, join, admit, removal, expected
// votes; the daemon implements its Init: files, Raft host, servers, under
// one lock), internal/cluster (status, health report, configuration, join
// tokens, audit), internal/volume (replicas, shards, primaries, NBD
// exports, handover, verify), internal/vmm (libvirt, crash restarts, VM
// placement, migration, maintenance), internal/recovery (self-fence lease,
// watchdog, failure detector, fence -> promote -> restart), internal/api
// (every gRPC service and its authentication; one error mapping through
// internal/apierr), internal/peers (connections to the other members),
// internal/nodedir (the data directory's files), internal/metrics. Where
// one subsystem needs another, it names a small interface and the daemon
// adapts (volumedeps.go, vmmdeps.go, recoverydeps.go); the VM manager takes
// the volume manager as it is.
//
// Invariants:
//   - it is the top of the layering (internal/layers): only cmd/ imports it,
//     no type outside it holds a *Daemon, and the packages below it never
//     reach up. What they need from above they take as small interfaces and
//     functions: replication gets its Authority and Fencer from the volume's
//     Raft shard and its peer authentication from api.ReplicationPeer, so
//     the data path carries no PKI, gRPC or Raft code;
//   - start order: listeners (bound in New, so a port conflict fails at
//     once); the volume, VM and recovery managers; the NBD, admin-socket and
//     metrics servers; on a node in a cluster, Raft and the TLS servers, then
//     the volumes it holds, unless its node certificate expired: then it
//     stays stopped (no Raft, no TCP servers, its data kept) until a rejoin
//     starts the same in process (rejoin.go). Ready is closed then, and the
//     VM, HA and sweep loops start. Shutdown stops the gRPC servers first, then NBD, the VMs'
//     driver and the volumes, then the peer connections and Raft;
//   - every connection between nodes is mutual TLS with a node certificate
//     of the cluster's CA (peer gRPC except Join, the Raft transport, the
//     replication port); the admin API over TCP also needs a named API
//     credential, and the admin unix socket accepts only root or the
//     daemon's user (api.LocalOnly) (docs/design.md §7);
//   - every TLS listener (backend, admin, replication, NBD) remembers its
//     open connections by peer certificate (pki.Conns), and whenever the
//     metadata applies a change that may refuse a certificate
//     (Meta.CertGeneration) those the revocation list now refuses are cut,
//     Raft's too (watchRevocations); only a refusal by the list cuts;
//   - a removed node's certificate is never trusted again, except that a
//     member tells that node of its removal over a connection that checks
//     only the CA and the node's name (tellRemoved): it is told, never
//     asked; a member whose handshake refuses such a node tells it at most
//     every removedNoticeEvery.
package daemon
