// Package vmbench is what the VM benchmarks under bench/ share: a 3-node
// netns cluster (internal/testcluster) with one libvirtd (QEMU TCG) and one
// tandemd per host, optionally one ipmi_sim BMC per host whose power-on
// restarts both, the guest image, the tandem CLI run inside a host's
// namespace with the caller's deadline, JSON decoding of its answers and log
// excerpts. The machine and binary description for the reports is in
// benchkit.
//
// Owner: the bench maintainers.
//
// Invariant: an Env owns every process and namespace it starts; Close
// kills them by PID and namespace and removes the temporary directory, also
// when the benchmarks (which defer it) stop on an error or a signal, so a
// run leaves nothing behind for the next.
package vmbench
