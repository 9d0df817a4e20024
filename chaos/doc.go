// Package chaos is Tandem's fault-schedule runner (issue 16), in the
// manner of Jepsen: a seeded random schedule of faults played against a
// real 3-node cluster (internal/testcluster: network namespaces, real
// tandemd processes) while NBD clients write and read stamped blocks, then
// checkers over the recorded history once everything is healed.
//
// Owner: the test-infrastructure maintainers.
//
// # Schedules
//
// Generate(seed, opts) is deterministic: the same seed and options give
// the same faults, start times, durations and overlaps (PCG seeded with the
// seed). A schedule prints on one line; a failing one prints the command
// that replays it (`make chaos SEED=S SCHEDULES=1`, or CHAOS_SEED=S
// CHAOS_SCHEDULES=1 go test -run TestChaosSchedules ./chaos/ for the CI
// profile). Only the faults are replayed exactly: the workload's timing and
// the daemons' scheduling are not, so a replay may not hit the same race.
// The kinds the runner can inject are part of the options: a seed found
// with VMs (`make chaos`'s default since VMS=1) replays with VMs, and one
// found before them (seed 1014, say) with VMS=0.
//
// # Faults (the nemesis)
//
//   - process: kill -9 of tandemd (restarted at heal); SIGSTOP/SIGCONT of
//     tandemd for pauses below the HA suspect timeout (0.2–1s) and above
//     the self-fence lease plus grace (6.2–7s in CI, up to 12s in the long
//     profile);
//   - host: power off, as the BMC does (Cluster.Kill of everything in the
//     namespace plus both switch ports down); power on brings the ports up
//     and starts tandemd;
//   - network, with nftables inside the node's namespace, one table per
//     fault (deleted at heal): isolate a node, split a minority from the
//     majority, a one-way partition (the node's packets to a peer
//     dropped), N% loss (numgen random), and a bandwidth cap (tc tbf on
//     the node's eth0); and a delay: every backend packet of the node, to
//     and from the other nodes, held 20-200ms (drawn per fault, Latency)
//     each way, so a round trip with it grows by twice that;
//   - operator actions: promote another replica, resync, online verify,
//     node maintenance enable/disable. Refusals (no quorum, replica not
//     UpToDate) are expected under faults and only counted.
//
// # Hand-written schedules
//
// CHAOS_SCHEDULE runs one exact schedule instead of random ones, written
// as a schedule prints (ParseSchedule): the whole line
// (seed=1 profile=ci length=5s faults=[...]) or only its faults,
//
//	CHAOS_SCHEDULE='isolate(primary(v0))@2s+22s' go test -count=1 -run 'TestChaosSchedules$' ./chaos/
//
// Each fault is KIND(ARGS)@START+DURATION (instant kinds have no
// +DURATION), the times Go durations from the workload's start, the
// arguments as Fault.String prints them; a slow disk prints its delay
// (disk(v0,n2,slow,125ms)) so that a printed schedule replays exactly.
// Where a fault names one node, primary(v0) (or primary(vm0-disk)) names
// the primary of that volume when the fault is applied
// (Fault.NodeIsPrimary): the runner places one primary on each node,
// rotated with the seed (seed 1: v0's on n3, v1's on n1, v2's on n2), and
// earlier faults may move them. The seed is CHAOS_SEED, else the
// line's seed=, else 1; it still names the volumes and seeds the clients.
// Without a length the workload stops 2s after the last heal. Malformed
// input fails before the cluster starts; nodes, volumes, VMs or kinds the
// runner does not have (Schedule.Check) before the schedule does. A fixed
// schedule is not part of a report (CHAOS_REPORT is refused with it) and
// its replay command is its own line. An isolation of a primary that is
// to show two writers must outlast the self-fence lease (4s) and HA's
// promotion elsewhere (the node is declared dead 3s after the cut and
// fenced once its lease plus margin ran out: 6.4s after the cut in one
// run), and leave time for the writes after it: isolate(primary(v0))@2s+22s.
//
// Delay is NFQUEUE (internal/netdelay): the kernel has no netem and nft
// has no queue expression here (CONFIG_NFT_QUEUE is not set), but the
// xtables NFQUEUE target is built in, so two iptables rules in the node's
// namespace (OUTPUT to the peers, INPUT from them; iptables-nft, so
// `nft flush ruleset` in healAll removes them too) queue the packets to
// queue number Fault.ID, and a netdelay.Delayer bound to it in that
// namespace, run by the test process, accepts each one Latency after it
// came, in order (one FIFO, one delay: no TCP reordering). It is started
// before the rules; at heal it stops delaying (Release: what it holds goes
// at once, in order), the rules are deleted, then it is closed, since a
// packet queued with no listener is dropped. A TCP proxy was the other option;
// it would have to sit on every backend connection (Raft, peer gRPC,
// replication), which tandemd dials at its peers' own addresses, so it
// would need address rewriting and would turn a delayed link into a
// proxied one; NFQUEUE delays the real packets on their real path.
// Overlapping delays on one node add up (each has its queue).
//
// Disk faults come with Config.FaultDisks (CHAOS_DISK=1; `make chaos` sets
// it by default): every node's volume directory is an internal/faultfs
// mount served by the test process, made before tandemd first starts. A
// disk fault hits one node: EIO on writes and syncs of one volume's files
// (a primary detaches and serves diskless, a secondary drops out of sync),
// EIO on its reads, or every operation on the node's volume files slowed
// by 50–200ms. Healing clears the rule; the convergence phase's resync
// re-attaches a detached replica. With fault disks a power-off is a power
// cut (testcluster.PowerCut): what tandemd had not synced is dropped, as
// LazyFS does, so a write acknowledged but not durable would show as lost.
// Result.DiskHits counts the operations the disks really failed or
// delayed, and the power losses. Other DiskNemesis implementations plug
// into the same slot (Config.Disk). Clock skew cannot be set per namespace.
//
// # VMs
//
// With Config.VMs (CHAOS_VMS=N; `make chaos` runs 1 by default, VMS=0
// leaves it out; the CI profile runs none, since a guest's creation and
// boot costs each schedule 10-30s) every node runs libvirtd
// (testcluster.StartLibvirtd) and tandemd is wired to it. Each schedule
// creates its VMs: the test guest (internal/guest: kernel and initramfs,
// TCG, 128 MiB) on a new 16 MiB 3-replica volume of its own, HA on (the
// cluster's default), first hosts rotated, and waits until each guest
// acknowledges disk writes. Three more kinds are generated then:
//
//   - kill-libvirtd: SIGKILL of the node's libvirtd alone (its QEMUs live
//     on, as when libvirtd crashes); restarted at heal, and it reattaches
//     to them;
//   - kill-qemu: SIGKILL of the VM's QEMU wherever it runs (found in /proc
//     by libvirt's -name guest=NAME, placed by network namespace); an
//     instant fault: restarting it is tandem's business (its crash
//     restart, or HA);
//   - migrate: `tandem vm migrate VM --to NODE` (60s bound), NODE the
//     fault's node or, when the VM is recorded there already, the next
//     one; refusals are counted as the other operator actions' are.
//
// A power-off kills libvirtd and the QEMUs with everything else in the
// namespace (Cluster.Kill), and power-on starts libvirtd, then tandemd.
// The harness has no /dev/watchdog, so it stands in for it: a node whose
// tandemd has not run (killed or stopped) for the self-fence lease (4s,
// the watchdog's timeout in tandemd) loses its QEMUs, as the watchdog's
// reset would take them (Result.WatchdogKills). Without that, a tandemd
// stopped past the lease leaves its QEMU running while HA restarts the VM
// elsewhere, which only the watchdog prevents on real hosts.
//
// During the schedule every node's libvirtd is asked every 300ms, over its
// unix socket (go-libvirt), which of the VMs it runs (libvirt's running
// state and domain ID; a paused incoming migration does not count, a
// failed look counts as "not running" so that no span is drawn across it)
// into the DomainSamples CheckVMs judges: no VM ever runs on two nodes at
// once. After healing, within the bound, every VM must run on exactly one
// node by every libvirtd, and its guest must acknowledge a disk write
// beyond every one it had acknowledged before (CheckVMProgress). A VM
// tandem gave up restarting on its node (event vm-restart-given-up: its
// QEMU stopped a fourth time within 10 minutes, the documented limit; the
// schedule's kills, the watchdog's and a self-fence all count) is started
// once with `tandem vm start`, as the event asks of an operator
// (Result.VMGivenUp), and must then run within the bound too. The
// guest's heartbeats (one UDP socket per VM on the switch) carry its disk
// counter, reported only after the O_SYNC write that stored it returned:
// CheckGuestCounter holds that no agent (a boot of the guest: a failover,
// a restart) starts from a counter below one an earlier agent
// acknowledged, and that an agent's counter never goes back; two copies
// running at once fail it too. Agents are told apart by arrival order
// (a sequence number that does not grow starts a new one): the boot
// number reaches the disk only with a boot's first write, so an agent
// killed before it leaves the next one the same number. The VM's
// volume joins the convergence check (in sync within the bound; no verify
// or hashes, since the guest keeps writing). The VM's volume is a target
// of promote, resync, verify and disk faults too (Fault.VMDisk, printed
// "vm0-disk"): with VMs, each such fault names it as often as any one
// workload volume, drawn from a stream of its own so that the rest of a
// schedule is what earlier builds made of the seed. Its data is the
// guest's, not stamped blocks: the writes, single-writer and read-back
// checks cover only the workload's volumes, and the guest's counter
// (CheckGuestCounter, CheckVMProgress) stands for them on the VM's disk.
// Not covered: a QEMU running while its libvirtd is down is not seen by
// the sampler (the counter check still catches two writers); a kill of
// libvirtd does not count towards the watchdog.
//
// Overlapping faults on one node are counted, so a heal undoes only what no
// other fault still needs; apply and heal are serialised. After the
// schedule every fault is healed again (healAll) whatever happened, and
// between schedules too: one cluster serves every schedule, each with its
// own fresh volumes (two 2-replica, one 3-replica, primaries rotated).
//
// # Reports
//
// A run writes CHAOS_REPORT.{md,json} (Summary). The 1000-schedule run
// takes longer than one sitting, so CHAOS_APPEND=1 (make chaos APPEND=1)
// merges a run into the report already there (Summary.Merge): each run is
// a Segment with its seeds, its tandem commit and date, and a seed already
// reported is refused (before the first schedule runs). The report is
// rewritten after every schedule, so a sitting stopped early keeps the
// schedules it finished, and CHAOS_FOR=90m (make chaos FOR=90m) ends a
// sitting after the schedule running when that much time has passed. An
// interrupt (SIGINT, SIGTERM) ends it after the running schedule too, with
// its cluster taken down; a second one kills the test at once.
//
// # Workload and history
//
// Two clients per volume, each owning 12 blocks, write 4 KiB blocks
// stamped with (volume, block, generation, client) plus a CRC-covered
// pattern, with FUA or write+flush, and read blocks back. Each operation is
// recorded as invoke then ok, fail (an NBD error reply) or unknown (no
// answer within 5s, connection lost). After an error a client asks
// `volume show` where the primary is and reconnects there, over the unix
// NBD socket in the primary's data directory (the path a VM on that node
// uses); the history records the node and the epoch it connected at.
//
// Every second client of each volume (the odd ones: one of the default
// two; a fixed rule, so neither the schedule's random stream nor the
// clients' own changes) is a follower, an NBD consumer that reconnects on
// its own: about every second (0.75-1.25s) it asks `volume show` through
// one node, each node once per round in a random order (lookOrder; a
// stream of its own, seeded by the seed and the client), and between two
// requests moves to the primary that answer names if it is at a newer
// epoch, or another node at the same epoch (shouldMove). An answer at an
// older epoch is stale (an isolated node knows only its own view) and is
// ignored; asking the nodes in turn rather than always the same one is
// what lets a follower hear of a new primary while some node is cut off
// (and once per round rather than independently drawn: seed 1's follower
// of v0 drew the isolated node four times in a row). The other clients
// move only after an error. (A look takes up to about 3s while a replica
// of the volume does not answer; the follower writes on meanwhile.)
// Without followers, a primary that wrongly kept acknowledging while cut
// off would keep all its clients, the new primary would get no writes,
// and two writers would never show in the history. Result.FollowerMoves
// counts the moves.
//
// # Checkers (after healing, a resync and the wait for convergence)
//
//   - writes: every block holds its last acknowledged generation or a
//     later-invoked one, never an older one, never a torn or misdirected
//     block; a read during the run returns at least what was acknowledged
//     before it began and only what was invoked before it ended;
//   - single writer: no acknowledged write of an older epoch invoked after
//     another node acknowledged one at a newer epoch (client history), and
//     no node's record of its acknowledgements at an older epoch ending
//     after another epoch's began. The record is replication.Primary's
//     "writes acknowledged" log line (first_ns, last_ns, count; at most
//     once a second and at close), added for this checker;
//   - convergence: within the bound (90s) every replica is UpToDate and in
//     sync, `volume verify` reports no mismatch, and the replicas' data
//     areas hash the same (a difference found while a replica has since
//     left sync, its link timing out only then, means "not converged
//     yet": the check waits again within the bound);
//   - liveness: a write to every volume succeeds within the bound, and the
//     cluster is quorate with every node online.
//
// Each checker is a pure function over the history and observations, and
// check_test.go shows each one failing on a synthetic history (a lost
// write, a torn block, an older generation, two writers, a differing
// replica) and passing on a good one.
//
// Invariants: a schedule is a pure function of its seed and options; every
// fault the nemesis applies is healed before the checkers run and before
// the next schedule; an operation is acknowledged in the history only when
// the NBD server answered that request with success (nbdclient's
// invariant); the checkers report only what the history proves (an
// unknown or failed write may or may not be on disk).
package chaos
