// Package testcluster runs an N-node cluster on one machine for integration
// tests, simulating separate hosts with Linux network namespaces.
//
// # Why network namespaces
//
// Clustered daemons bind to "their" address, talk to peers on well-known
// ports and must survive peers crashing, freezing or dropping off the
// network. Namespaces give every simulated host its own interfaces, routing
// table and port space, so each node can use the same ports and real IP
// addresses, and faults (partition, crash, freeze) are injected at the
// kernel level instead of being mocked. Processes are ordinary processes of
// the test, so logs, PIDs and signals stay easy to reach.
//
// # Topology
//
// Every cluster owns one "switch" namespace holding a bridge br0 and one
// namespace per host:
//
//	host ns tdmt<pid>-<id>-n1: lo, eth0 10.99.0.11/24 ─┐
//	host ns tdmt<pid>-<id>-n2: lo, eth0 10.99.0.12/24 ─┼─ vnI ─ br0 (switch ns tdmt<pid>-<id>-sw)
//	host ns tdmt<pid>-<id>-n3: lo, eth0 10.99.0.13/24 ─┘
//
// Each host's eth0 is one end of a veth pair whose other end (vn1, vn2, …)
// is a port of br0. Both ends are created directly inside their namespaces:
// nothing is added to the root namespace, and as every cluster has its own
// switch, concurrent clusters (in one or several test processes) can reuse
// the same subnet. Cluster.Isolate takes a node's switch port down, which
// cuts it off from every other node in both directions while its processes
// keep running.
//
// # Processes
//
// Cluster.Start runs a long-lived process "on a host" through
// `ip netns exec`, which execs the command, so the recorded PID is the real
// process. Each process gets its own process group and PR_SET_PDEATHSIG
// SIGKILL, logs stdout and stderr to Node.Dir/<name>.log and can be
// stopped, killed, paused and later started again under the same name.
//
// # Cleanup guarantees
//
// New registers Cluster.Close with t.Cleanup, so teardown also runs when a
// test fails or calls t.FailNow. Close is idempotent: it SIGKILLs every
// process the harness started (by PID and process group) plus anything else
// still found inside the cluster's namespaces (`ip netns pids`), reaps its
// own children and then deletes all the cluster's namespaces, which also
// destroys the bridge and veth pairs. If the test process dies without
// cleaning up, its children die with it (PDEATHSIG) and the next New sweeps
// the orphaned tdmt* namespaces: the creator's PID is part of each
// namespace name, and namespaces whose creator is gone are emptied and
// deleted.
//
// The harness needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
// Tests should call Require, which skips when not running as root and fails
// when running as root but namespaces do not work.
package testcluster
