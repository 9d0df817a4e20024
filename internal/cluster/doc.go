// Package cluster answers for the cluster as a whole: its status (quorum,
// leader, the node table with each member's health), the health report
// added to the Status RPC's answer (offline nodes, volumes out of sync,
// certificates near expiry, nodes without BMC fencing), its configuration
// (the settings registry applied to reads and writes) and join tokens.
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
//   - it holds no *daemon.Daemon: it works on state.State and the probe
//     and volume warnings it is handed.
package cluster
