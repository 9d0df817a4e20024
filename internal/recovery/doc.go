// Package recovery is HA on a node: the self-fence lease and the watchdog
// on every node, and on the metadata leader the failure detector and the
// recovery of a dead node's VMs (fence -> promote -> restart); it also
// holds the policy of the HA and fencing admin calls (status, arm, events,
// fence configuration, manual fence). The timing, detector and lease state
// machines are pure logic in package ha; the fencing agents are package
// fencing.
//
// Owner: the HA maintainers. internal/daemon wires it: it builds one
// Manager from the node's state.State, adapts its volume and VM managers
// to Volumes and VMs, starts Run, and serves the HA, fence and liveness
// gRPC calls through the Manager.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon: it
//     works on the shared state.State, the metadata client (Meta) and the
//     Volumes and VMs it is handed, and runs no hypervisor code itself;
//   - only this package sets or clears the self-fence flag (state.Fence),
//     and it sets the flag before freezing the volumes and destroying the
//     VMs; once set, the watchdog is not petted again, so a node that
//     cannot finish its self-fence is reset by the hardware;
//   - a node that provably runs nothing (no primary, no domain) does not
//     fence itself when its lease runs out; any doubt means it does;
//   - a node stops for good on proof of its removal only (Removed, called
//     on a member's authenticated NodeRemoved notice, sent once the removal
//     committed), never on a guess such as refused handshakes: it records
//     the removal (state.Removal), sets the fence flag, freezes the volumes
//     and destroys the VMs, and the flag is never lifted again; data stays
//     on disk;
//   - recovery acts only while this node leads the metadata shard at the
//     term it started in, and only once the dead node is positively fenced
//     (an agent confirmed, its lease provably expired, or an operator
//     confirmed it off); a node that answers again before that cancels the
//     recovery. A VM's volumes are promoted on the target before the VM is
//     started there, and the move is recorded only after it started;
//   - fence passwords are sealed (internal/sealed, bound to the node and
//     the field) before a fence config is proposed, so the Raft log and
//     snapshots never hold them in plain text; they are opened in memory
//     only to build the agents of a fence round, and no answer, event or
//     log line carries them. A node without the cluster secret refuses to
//     seal (FailedPrecondition) and its agents fail with the reason;
//   - every wait honours its context.
package recovery
