// Command scale benchmarks Tandem with many volumes (issue 17): on a
// 3-node cluster of network namespaces it creates -volumes 2-replica
// volumes (the third node is their witness), then measures per node the
// idle RSS, idle CPU and goroutines, the time to create them, the latency
// of 'volume list' and 'cluster status', the metadata propose p50/p99
// against the same cluster with -baseline volumes, and the loss of the
// node that is primary of about a third of them: when it was declared dead
// and fenced, and each volume's promotion time after that (p50/p99/max).
// It writes scale.json and scale.md to -out and prints the Markdown; goals
// are PASS/FAIL lines.
//
// Owner: the bench maintainers.
//
//	go run ./bench/scale -bin ./bin -out bench/results [-volumes 1000] [-failover=false]
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
// Not measured: the restart of VMs on the lost node (the goal "10 VMs
// restarted"); that needs libvirtd per node and is covered by
// bench/failover for one VM.
package main
