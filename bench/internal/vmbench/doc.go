// Package vmbench is what the VM benchmarks under bench/ share: a 3-node
// netns cluster (internal/testcluster) with one libvirtd (QEMU TCG) and one
// tandemd per host, optionally one ipmi_sim BMC per host whose power-on
// restarts both, the guest image, the tandem CLI run inside a host's
// namespace with the caller's deadline, JSON decoding of its answers and log
// excerpts. The machine and binary description for the reports is in
// benchkit.
//
// The hard-host-loss series of bench/failover (replicated disks) and
// bench/rbd (RBD disks) is Failover (failover.go): it creates the test
// guest, captures its UDP stream on the switch's VM bridge (Wire,
// capture.go: AF_PACKET with kernel timestamps), crashes the guest's host
// run after run, times the recovery's phases from the event log, QEMU's
// log and the capture, checks I2 and the event order, and powers the host
// back on through its BMC. What differs between disk kinds is a
// DiskState (ReplicatedDisk, RBDDisk: when the disk is ready for the next
// crash) and the phase list (ReplicatedPhases, RBDPhases: an RBD disk's
// takeover, event volume-rbd-takeover, is a phase of its own). The runs'
// summaries and the tables both reports print are in failreport.go.
//
// Owner: the bench maintainers.
//
// Invariant: an Env owns every process and namespace it starts; Close
// kills them by PID and namespace and removes the temporary directory, also
// when the benchmarks (which defer it) stop on an error or a signal, so a
// run leaves nothing behind for the next.
package vmbench
