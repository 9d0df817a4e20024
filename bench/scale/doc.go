// Command scale benchmarks Tandem with many volumes (issue 17): on a
// 3-node cluster of network namespaces it creates -volumes 2-replica
// volumes (the third node is their witness), then measures per node the
// idle RSS, idle CPU and goroutines, the time to create them, the latency
// of 'volume list' and 'cluster status', the metadata propose p50/p99
// against a cluster with -baseline volumes, and the loss of the
// node that is primary of about a third of them: when it was declared dead
// and fenced, and each volume's promotion time after that (p50/p99/max).
// It writes scale.json and scale.md to -out and prints the Markdown; goals
// are PASS/FAIL lines.
//
// Owner: the bench maintainers.
//
//	go run ./bench/scale -bin ./bin -out bench/results [-volumes 1000] [-vms 10] [-failover=false]
//
// BENCH_VOLUMES overrides the default of -volumes (make bench-scale
// BENCH_VOLUMES=300 for a quick run). It must run as root (namespaces).
//
// Invariant: the list and status latencies count only answers that hold
// every volume created; the failover counts a volume as promoted only once
// a survivor's list names a primary other than the lost node. A goal it
// could not measure is reported as such, never as PASS; a failed create or
// phase is an error of the run.
//
// The propose goal compares p99s taken at the same time: a reference
// cluster of the same shape with -baseline volumes is started beside the
// full one, and -interleaved proposals go to each in turn. Samples taken
// minutes apart, as the same cluster's baseline is, measure the shared
// host's load in two windows more than the clusters; they are still shown.
//
// With -vms N (10 by default; 0 for none) every node also runs a libvirtd
// and tandemd offers it 4 GiB for VMs; before the failover, N small TCG
// guests (internal/guest's test guest, 128 MiB, each on its own 2-replica
// disk, distinct priorities) are started on the node that will be lost,
// and the failover also waits until all run elsewhere: the report gives
// when the first and the last were restarted (their vm-recovered events)
// after the kill and after the fence. The idle figures are taken before
// the VMs start.
package main
