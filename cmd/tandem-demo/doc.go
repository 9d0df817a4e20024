// Command tandem-demo starts a local 3-node Tandem cluster, each node in its own
// network namespace with its own libvirtd, forms it with the CLI and prints
// its status; it writes through a replicated volume's NBD export, boots a VM
// on the primary of its 2-replica disk and live-migrates it to the
// secondary, measuring the guest's outage from its UDP heartbeat stream. It
// is what `make demo` runs. On a terminal it keeps the cluster up until
// Enter or Ctrl-C so it can be explored; otherwise it tears it down at once.
//
// Owner: the test-infrastructure maintainers.
//
// Invariant: everything the demo starts lives in its own testcluster
// (network namespaces and a temporary directory), and is torn down before
// the command returns, also when it fails or is interrupted.
package main
