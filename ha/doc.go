// Package ha holds the logic of Tandem's failure handling (docs/design.md
// §5): the timing, the failure detector's state machine and the self-fence
// lease.
// It does no I/O; internal/daemon drives it with pings, quorum checks,
// fencing agents and libvirt.
//
// Owner: the HA maintainers.
//
// # Detection
//
// The metadata shard's leader pings every data node each HeartbeatInterval
// over the backend network. A node that has not answered for
// SuspectTimeout is suspect (reported, nothing done); after DeadTimeout it
// is dead and the recovery manager starts fencing it. A new leader starts
// every node's clock at its own start, so it never declares a node dead
// sooner than DeadTimeout after it took over.
//
// # Self-fencing and the lease
//
// A node renews its lease when the leader's ping reaches it while the node
// has proven quorum itself (a linearizable read of the metadata shard)
// within the last heartbeat interval; the leader renews its own on quorum
// alone. A node whose lease runs out stops its VMs and freezes its volumes.
// The leader answers every ping after the node renewed, so the node's last
// renewal is never later than the leader's last successful ping of it plus
// one heartbeat interval (a stale leader's ping inside a minority can still
// arrive within that interval). The leader therefore treats the lease as
// provably expired only at
//
//	lastSeen + SelfFenceLease + HeartbeatInterval + drift + SelfFenceGrace
//
// where drift is fencing.MaxClockDriftPPM of the lease and the grace covers
// destroying VMs (fencing.LeaseMargin).
//
// # Defaults and false positives
//
// Interval 500 ms, suspect 1.5 s, dead 3 s, self-fence lease 4 s, grace 2 s.
// A node watches its lease every 20 ms and freezes its volumes at once when
// it runs out; the grace covers destroying its VMs (libvirt's SIGKILL and
// the reaping of QEMU).
// A 1-2 s stop of a node (a GC or I/O pause, a slow disk) costs at most
// four missed pings: the node becomes suspect, never dead, and its 4 s lease
// does not run out, so nothing is fenced. With a BMC the loss of a node is
// confirmed about 3.1 s after its last answer (power-off confirmed within a
// few hundred ms); with the lease alone about 6.5 s. Promotion and a VM start
// add well under a second, for a goal of under 10 s end to end.
//
// # Invariants
//
//   - the package does no I/O and imports only the standard library
//     (internal/layers);
//   - a node is declared dead only after DeadTimeout without an answer,
//     counted from no earlier than the leader's own start, so a new leader
//     never declares a node dead sooner;
//   - the leader treats a node's lease as expired only at lastSeen +
//     SelfFenceLease + HeartbeatInterval + drift + SelfFenceGrace, by which
//     time the node, if it is alive, has frozen its volumes and stopped its
//     VMs.
package ha
