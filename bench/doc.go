// Package bench holds Tandem's benchmarks. Each one is a program under
// bench/ that builds (or takes) the tandemd and tandem binaries, runs a real
// cluster on one machine with the netns harness of internal/testcluster
// (one network namespace per simulated host, real processes, real Raft
// traffic over veth pairs and a bridge), measures, tears everything down
// and writes machine-readable JSON plus a Markdown report to bench/results.
// Only a complete run replaces those files: an interrupted or failed one
// writes its partial report, marked so, as <name>.partial.json and .md
// (bench/internal/benchkit, which holds the code they share).
// The package itself contains no code; it documents the suite.
//
// Owner: the bench maintainers.
//
// # Control plane (bench/control, `make bench-control`)
//
// Runs a 3-node cluster and measures:
//
//   - Metadata propose latency. N sequential (one in flight) Cluster.SetConfig
//     calls overwriting the key bench.seq, sent through the unix admin socket
//     of the metadata leader and then of a follower (which forwards the
//     proposal to the leader inside dragonboat). The client-side latency of
//     each call covers gRPC over the socket, the token check, a ReadIndex
//     quorum check, one Raft proposal committed and applied on the node
//     handling the call, and the linearizable read-back of the configuration
//     the RPC returns. The server-side histogram tandem_raft_propose_seconds
//     {shard="metadata",result="ok"} of the handling node is scraped before
//     and after (from inside its namespace, by re-running the benchmark
//     binary with a hidden -fetch flag through `ip netns exec`), and
//     p50/p99 of the difference are interpolated within its power-of-two
//     buckets.
//   - Leader failover. K times: find the leader, SIGKILL every process of
//     its host, then poll a survivor's Cluster.Status through its unix
//     socket (a new call every 100 ms, calls overlapping) until one reports
//     quorate with another leader. The time from the kill to the end of
//     that call is the failover time seen by an API client (goal < 2 s);
//     it includes the call's own duration, which is reported with the
//     duration of every poll. Alongside, a second client retries SetConfig
//     through the same survivor (when writes work again), and a watcher
//     inside each survivor's namespace scrapes /metrics every 10 ms, which
//     dates the Raft election itself (first sample with a known leader at a
//     higher term). The killed node is then restarted and the time until
//     the cluster shows 3/3 voters online and quorate is recorded before
//     the next round.
//   - Idle memory. VmRSS (and VmHWM) of every tandemd from /proc after the
//     cluster has been idle for a while, once after formation and once at
//     the end of the run (goal < 60 MB per node).
//
// # Replication (bench/replication, `make bench-replication`)
//
// The same fio jobs, one at a time, against: a local file (libaio,
// O_DIRECT: the floor), qemu-nbd on a local file with --cache=none (the
// single-copy reference), and Tandem volumes with 1, 2 and 3 replicas on a
// 3-node netns cluster, through the primary's NBD unix socket. Every target
// is prefilled once so no job pays for first writes into unwritten extents.
// Jobs: 4K random write QD1 with a flush after each write (write+flush
// pairs), 4K random write QD1 and QD32 without flushes, 1M sequential write
// QD4. The report gives p50/p99/p99.9, IOPS or MB/s, every ratio to
// qemu-nbd and to the floor, server CPU, and the replica states after each
// job.
//
// Two floors say what the machine allows any system: local-2copies (two fio
// jobs on two local files at once: the disk with two copies and no
// network), and for the QD1 durable goals a replicated floor, that pair
// plus one unix and one backend round trip, each measured first by fio's
// net engine in ping-pong mode (4 KiB, TCP between two node namespaces, a
// unix socket on the host). A floor that misses a goal's limit means the
// goal cannot be met on this machine. With -profile, CPU profiles of every
// tandemd per job; with -trace as well, a Go execution trace.
//
// Target tandem-r2-tls is the 2-replica volume again, through the
// primary's TCP NBD export (nbd_addr, TLS 1.3 with an export certificate)
// from the switch namespace, a host on the backend network: the report's
// "NBD over TLS" table sets it against tandem-r2 (the unix socket) job by
// job, in the same run. fio's libnbd refuses tls-certificates= in a URI,
// so fio runs in a private mount namespace with the certificate files
// bound over /etc/pki (libnbd's default for root). A short run of just
// these targets, e.g.
//
//	go run ./bench/replication -bin bin -targets qemu-nbd,tandem-r2,tandem-r2-tls \
//	  -runtime 5s -ramp 1s -size 256M -out /tmp/r
//
// is in bench/results/replication-nbd-tls.md.
//
// # HA failover (bench/failover, `make bench-failover`)
//
// A 3-node cluster with one libvirtd (QEMU TCG) and one ipmi_sim BMC per
// host and IPMI fencing configured, and one test guest (internal/guest) on
// a 3-replica disk. Ten times: crash the host running the guest (every
// process SIGKILLed, both switch ports down) and time, from the crash
// instant, (a) node-dead, (b) the fence confirmed, (c) the promotion and
// (d) vm-recovered from the cluster's event log, and (e) the restarted
// guest's first UDP datagram from an AF_PACKET capture with kernel
// timestamps on the switch's VM bridge (the thesis's tcpdump method). It
// checks that the disk counter the restarted guest reads at boot is at
// least the last one it saw acknowledged before the crash (I2), that the
// events come in the safe order, and that the old guest sent nothing after
// the kill; then it powers the host back on through its BMC and waits for
// its replica to be UpToDate before the next run (crashes alternate).
// Goal: (d) p50 < 10 s (stretch < 5 s), compared with published figures
// for Proxmox VE HA, vSphere HA and VMmanager. Shared cluster code for the
// VM benchmarks is in bench/internal/vmbench, and so is this series
// (Failover), which bench/rbd runs on an RBD disk.
//
// # Ceph RBD (bench/rbd, `make bench-rbd`)
//
// Issue 15's benchmark, in one run on a 3-node cluster with one libvirtd
// and one ipmi_sim BMC per host and a micro Ceph (internal/cephtest: one
// monitor, one manager, three bluestore OSDs on files, a pool of size 2)
// in the switch namespace on the backend network. The data path: QD1
// write+flush p50 (4K), QD32 4K random-write IOPS and 1M sequential MB/s,
// the same fio jobs one at a time after a prefill pass, through fio's rbd
// engine directly (librbd in fio with rbd_cache=false, read back from its
// admin socket, on an image of its own made with `rbd create`, fio in the
// owner node's namespace), through Tandem's NBD export of an RBD volume,
// and, as references, a 2-replica Tandem volume and qemu-nbd on a local
// file. Goal: the NBD export adds at most 15% to the rbd engine's QD1
// write+flush p50 (the median of the ratios of -goal-rounds rounds, the
// two run back to back); the report gives the ratio, PASS or MISS, every
// round, and how much of the difference is on the write and on the flush. Then the failover of
// a VM whose disk is an RBD volume, with bench/failover's method
// (vmbench.Failover, -runs 3 by default): node dead, fence confirmed, the
// RBD takeover (old clients blocklisted, lock broken and acquired), the
// owner's commit, QEMU started elsewhere and the guest's first datagram,
// with the same I2 and event-order checks.
//
// # Live migration (bench/migration, `make bench-migration`)
//
// The planned-migration outage measured as the Heartbeat/Xen thesis does
// (Braastad 2006, §5.4: a constant-rate UDP stream and its inter-arrival
// gaps). A 3-node cluster with one libvirtd (QEMU TCG) per host; per rate
// (100 and 1000 datagrams/s) one test guest (internal/guest, 192 MiB, a
// 64 MiB 2-replica disk) sending to a receiver on the switch, and 20
// `tandem vm migrate --output json` between the disk's replica nodes. Per
// migration: the longest gap of the stream during the call (the outage),
// lost datagrams, libvirt's total and downtime from the JSON result, how
// much of the gap the guest's clock stood still (paused) or ran without
// sending, and the stall of its acknowledged disk counter. It checks that
// the guest never restarted (boot counter, sequence), that its
// acknowledged counter kept increasing and that the target became primary,
// verifies the replicas after each series, and runs a control series
// without a disk (libvirt and QEMU alone, no Tandem volume). A guest that
// crashes or hangs after a migration is reported with its serial consoles
// and QEMU's vCPU and local APIC state, then restarted so the series goes
// on. Goal: p50 outage < 100 ms, compared with the thesis's 0.25 ± 0.09 s
// and QEMU's default 300 ms limit. Under TCG the guest kernel sometimes
// finds its memory corrupted right after the switch-over, with and without
// a disk (in the first runs: 7 of 128 migrations at 1000/s with a disk, 2
// of 120 without one, none of 123 at 100/s).
//
// # Invariants
//
// The package holds no code, only this description of the
// suite; bench/results holds figures of complete runs only, because every
// program publishes through benchkit.Finish, which writes an interrupted or
// failed run as <name>.partial.json and .md; and the VM benchmarks' Env
// (bench/internal/vmbench) kills every process and namespace it started,
// also when a run stops on an error or a signal.
package bench
