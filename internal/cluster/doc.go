// Package cluster answers for the cluster as a whole: its status (quorum,
// leader, the node table with each member's health), the health report
// added to the Status RPC's answer (offline nodes, volumes out of sync,
// certificates near expiry, nodes without BMC fencing), its configuration
// (the settings registry applied to reads and writes), join tokens,
// named API credentials, and the upgrade status (each node's release and
// protocol level, the cluster version, the gated features) with the one
// gated feature so far, node notes.
//
// Owner: the cluster-membership maintainers, with internal/membership
// (which changes who belongs; this package reports on them).
//
// Invariants:
//   - Status is answered by this node alone and always answers: without
//     quorum it says so and shows the last state this node applied, never an
//     error, so an operator can see a broken cluster;
//   - a configuration change is checked whole (every key known, every value
//     valid, HA timing coherent with what is stored) and refused before it
//     reaches Raft; nothing is written when any part is wrong or quorum is
//     missing;
//   - a credential's secret exists only in the Create answer (the cluster
//     keeps a verifier); Create and Revoke return only after every other
//     member that is not removed confirmed it applied the change (MetaSync,
//     a linearizable read there), and name the members that did not;
//   - a gated feature (a node note) is refused with FailedPrecondition,
//     naming the nodes on an older release, until the cluster version
//     allows it; bad input (a note over 256 bytes or of several lines) is
//     InvalidArgument, before anything reaches Raft;
//   - it holds no *daemon.Daemon: it works on state.State and the probe
//     and volume warnings it is handed.
package cluster
