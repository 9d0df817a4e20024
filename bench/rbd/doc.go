// Command rbd benchmarks Tandem on Ceph RBD (issue 15), in one run on a
// 3-node cluster of network namespaces (one tandemd, libvirtd and ipmi_sim
// BMC per host) with a micro Ceph (internal/cephtest: one monitor, one
// manager, three bluestore OSDs on files, a pool of size 2) in the switch
// namespace on the backend network, added as storage ceph1:
//
//   - the data path: the same fio jobs (4K random write QD1 with a flush
//     after every write, 4K random write QD32, 1M sequential write QD4),
//     one at a time after one sequential prefill pass of each target,
//     through fio's rbd engine directly (librbd in fio, rbd_cache=false,
//     on an image of its own made with `rbd create`, fio in the owner
//     node's namespace), through Tandem's NBD export of an RBD volume
//     (fio's nbd engine on the owner's unix socket), and, as references,
//     through a 2-replica Tandem volume's export and qemu-nbd on a local
//     file;
//   - the failover of a VM whose disk is an RBD volume, with
//     bench/failover's method (vmbench.Failover): -runs hard losses of the
//     host running it, timed from the crash instant to the node declared
//     dead, the fence confirmed (IPMI), the RBD takeover (old clients
//     blocklisted, lock broken and acquired: event volume-rbd-takeover),
//     the owner's commit, QEMU started elsewhere and the guest's first
//     datagram, each host powered back on through its BMC.
//
// It writes rbd.json and rbd.md to -out and prints the Markdown.
//
// Owner: the bench maintainers.
//
//	go run ./bench/rbd -bin ./bin -out bench/results [-runs 3] [-goal-rounds 3] [-size 512M] [-runtime 10s] [-keep-logs DIR]
//
// It must run as root (namespaces) from inside the module (guest image),
// with Debian's Ceph daemons, fio, qemu-nbd, nbdinfo and QEMU's rbd block
// driver installed (make deps).
//
// Goal (issue 15): Tandem's NBD export of RBD adds at most 15% to the rbd
// engine's QD1 write+flush p50 (write p50 + flush p50); the report gives
// the ratio and PASS or MISS, and where the added time goes. The QD1 job
// runs -goal-rounds times (3) on those two targets, back to back and
// alternating which goes first, and the ratio is the median of the rounds'
// ratios: on a shared machine the load drifts within minutes (one run of
// each was seen to land anywhere from 1.15x to 1.47x), and each round
// compares two runs seconds apart.
//
// Invariants: the rbd engine and the NBD export use the same librbd, pool,
// OSDs and image features from the same node namespace, so their ratio is
// the export's cost alone; the rbd engine runs with librbd's cache off
// (read back from its admin socket and reported), so both acknowledge a
// write once the OSDs have it. Every RBD VM failover run checks I2 (the
// restarted guest's disk holds every write it saw acknowledged) and the
// event order (dead, fenced, takeover, promoted, started; QEMU never before
// the fence); a run that breaks one fails the benchmark. Every process
// the run starts (Ceph daemons, qemu-nbd, tandemd, libvirtd, QEMU,
// ipmi_sim, fio) is ended by its PID or namespace, also on errors and
// signals.
package main
