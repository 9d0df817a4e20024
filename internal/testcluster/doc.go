// Package testcluster runs an N-node cluster on one machine for integration
// tests, simulating separate hosts with Linux network namespaces.
//
// Owner: the test-infrastructure maintainers.
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
// Every cluster owns one "switch" namespace holding two bridges, and one
// namespace per host:
//
//	host ns tdmt<pid>-<id>-n1: lo, eth0 10.99.0.11/24 ─┐
//	host ns tdmt<pid>-<id>-n2: lo, eth0 10.99.0.12/24 ─┼─ vnI ─ br0 ┐
//	host ns tdmt<pid>-<id>-n3: lo, eth0 10.99.0.13/24 ─┘           │ switch ns
//	                                                                │ tdmt<pid>-<id>-sw
//	host nI: guests' taps ─ vmbr0 (no IP) ─ vmup ──────── vmI ─ br1 ┘ 10.98.0.1/24
//
// br0 is the backend network: each host's eth0 is one end of a veth pair
// whose other end (vn1, vn2, …) is a port of br0. br1 is the VM network, a
// second L2 segment shared by all hosts: every host has a bridge vmbr0
// (Cluster.VMBridge) without an address, for guests' NICs, uplinked by a
// veth (vmup ↔ vm1, vm2, …) to br1. A guest therefore keeps its address
// and its peers across live migration, and br1's own address
// (Cluster.ReceiverIP, in Cluster.VMSubnet) is where test code receives
// from guests, with a process started by StartOnSwitch or a socket from
// ListenUDPOnSwitch. All interfaces are created directly inside their
// namespaces: nothing is added to the root namespace, and as every cluster
// has its own switch, concurrent clusters (in one or several test
// processes) can reuse the same subnets. Cluster.Isolate takes a node's br0
// port down, which cuts it off from every other node in both directions
// while its processes keep running; Cluster.IsolateVM does the same to its
// VM network uplink only.
//
// # Processes
//
// Cluster.Start runs a long-lived process "on a host" through
// `ip netns exec`, which execs the command, so the recorded PID is the real
// process. Each process gets its own process group and PR_SET_PDEATHSIG
// SIGKILL, logs stdout and stderr to Node.Dir/<name>.log and can be
// stopped, killed, paused and later started again under the same name.
//
// # libvirtd per host
//
// Cluster.StartLibvirtd runs a libvirtd "on" a host: in the host's network
// namespace plus a private mount and UTS namespace, with per-host /run,
// /var/{lib,log,cache}/libvirt, /etc/libvirt and /etc/pki bind-mounted from
// Node.Dir/libvirt and a /dev without kvm (KVM does not work on the test
// machines, and a visible /dev/kvm makes libvirtd re-probe QEMU for seconds
// on every start). Its unix socket is under Node.Dir so tests and tandemd,
// which are not in that mount namespace, reach it; other hosts reach it at
// qemu+tls://<node ip>/system, which peer-to-peer migration uses, with a
// node certificate (Libvirtd.MigrateURI adds the source's pkipath). Its TLS
// files are tandemd's <data dir>/libvirt-pki; until tandemd has written
// them (at create or join, then reloading libvirtd) they are placeholders
// from a CA of the harness shared by the cluster's hosts. QEMU's migration
// stream is TLS-only too (migrate_tls_force). LibvirtdOptions.InsecureTCP
// gives the old qemu+tcp listener for tests that need it. SwitchOnBackend
// puts the switch on the backend network as a non-member host. QEMUs it
// starts live in the host's network namespace, so Kill takes them down
// with it.
//
// # BMCs and fencing
//
// Cluster.StartBMC gives a host a simulated out-of-band BMC: a real
// ipmi_sim (OpenIPMI, IPMI v2.0 lanplus) in the switch namespace with its
// own address on br0 (<subnet>.(100+i), port 623), so it stays reachable
// from the other hosts while its own host is isolated or powered off, just
// as a BMC on a management network does. ipmi_sim delegates chassis power
// to a chassis_control program; ours is a small bash script that forwards
// the request over /dev/tcp to a loopback socket the test process opened in
// the switch namespace, because only the harness knows the host's
// processes. Power off is Cluster.Kill plus both switch ports down and is
// answered only once done, so "off" over IPMI implies a dead host; power
// on brings the ports up and runs the test's PowerHooks.On (restart
// libvirtd and tandemd). BMC.Unreachable SIGSTOPs ipmi_sim: clients see
// silence and time out, as with a hung BMC. Cluster.InNetns runs an agent
// "from" a host, whose namespace reaches the BMC addresses.
//
// # Disk faults
//
// Tandem.FaultDisk puts a node's data directory, or a directory inside it
// such as volumes/, on a fault-injecting FUSE filesystem served by the
// test process (internal/faultfs): tests inject EIO, ENOSPC and slow I/O
// into the running node and cut power (Kill, then PowerLoss drops what
// tandemd did not sync). Call it before tandemd first starts on the node:
// `ip netns exec` gives each process a copy of the mount table at start,
// and this machine's root mount is private, so later mounts are not seen.
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
//
// # Invariants
//
// Nothing is created in the root network namespace; every
// process the harness starts has its own process group and PR_SET_PDEATHSIG
// SIGKILL; Close, which New registers with t.Cleanup and which is
// idempotent, kills them and everything else in the cluster's namespaces,
// deletes the namespaces and then unmounts the fault disks; and namespaces
// whose creator died are swept by the next New.
package testcluster
