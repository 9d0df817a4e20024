// Command failover benchmarks Tandem's HA recovery from a hard host loss:
// over -runs runs on a 3-node cluster of network namespaces (one libvirtd
// with QEMU TCG, one tandemd and one ipmi_sim BMC per host), it crashes the
// host running a test guest (every process SIGKILLed, both switch ports
// down) and times, from the crash instant, (a) the node declared dead, (b)
// the fence confirmed, (c) the volume promoted, (d) QEMU started on the
// secondary and (e) the first UDP datagram of the restarted guest. It
// checks that the restarted guest's disk holds every write acknowledged
// before the crash, powers the host back on through its BMC and waits for
// its replica to be UpToDate before the next run. It writes failover.json
// and failover.md to -out and prints the Markdown.
//
// Owner: the bench maintainers.
//
//	go run ./bench/failover -bin ./bin -out bench/results [-runs 10] [-keep-logs DIR]
//
// The method follows the Heartbeat/Xen thesis (E. Braastad, 'Management of
// high availability services using virtualization', master's thesis, Oslo
// University College, 2006, §5.4.1): a constant-rate UDP stream recorded
// by a packet capture on the receiving side (tcpdump there; here an
// AF_PACKET capture with kernel timestamps, decoded with gopacket, on the
// switch's VM bridge).
//
// The series itself is vmbench.Failover (shared with bench/rbd, which runs
// it on an RBD disk); this program sets it up on a replicated disk and
// writes the report.
//
// It must run as root (namespaces) from inside the module (guest image).
//
// Invariant (I2): the disk counter the restarted guest reads at boot is at
// least the last one it saw acknowledged before the crash; the recovery
// events come in the safe order (dead, fenced, promoted, started) and the
// old guest sends nothing after the kill. A run that breaks one is reported
// as an integrity problem and fails the benchmark.
package main
