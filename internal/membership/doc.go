// Package membership decides who belongs to the cluster: it creates a
// cluster of one node, joins a node to a cluster (on the joining node) and
// admits it (on the member it asks), removes a node after its safety
// checks, and guards and records the expected-votes override.
//
// Owner: the cluster-membership maintainers. internal/daemon wires it: it
// builds one Manager from the node's state.State, implements Init (the
// files, the Raft host and the servers) and serves the admin and peer gRPC
// calls through the Manager.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon: it
//     works on the shared state.State, the Volumes and the Init it is
//     handed; starting, stopping and rewriting the Raft host stays wiring
//     in the daemon;
//   - create and join hold Init's lock throughout, so they are serialised
//     with each other and with every reader of the cluster handles; a
//     failure before the identity is written resets the node (Init.ResetLocked),
//     and the identity is written last, so its presence means the node
//     finished initialising;
//   - every mutation checks quorum first and changes nothing when it fails;
//   - join attempts are rate-limited per source address before anything
//     else (joinguard.go), and every refusal is counted by reason
//     (Config.JoinRefused) and logged in aggregate, never one line each;
//   - a join token is checked against this cluster's CA before quorum is
//     asked, then against the committed metadata by a read
//     (Meta.CheckJoin, the state machine's own checks) before anything is
//     proposed, so a bogus join costs no Raft entry; it is consumed
//     (Meta.Join, which checks again and decides) before a certificate is
//     signed or the Raft group changed;
//   - a rejoin (rejoin.go) is admitted like a join up to the metadata, then
//     checked by a read (Meta.CheckRejoin: the token as for a join, the
//     node known, not removed, same replica) before its certificate is
//     signed and the serial committed (Meta.Rejoin); it changes no record
//     but the node's serials and no Raft membership, and runs on the node
//     only while it is stopped (its certificate expired);
//   - a removal is recorded in the metadata (which revokes the node's
//     certificates) before the removed node is told (Config.TellRemoved:
//     the notice only ever reports a committed fact, which the node takes
//     as proof and stops on), and both before the node leaves the Raft
//     group; a node that cannot be told does not hold the removal up. It
//     is refused while Risks lists anything it would lose or strand,
//     unless forced.
package membership
