// Command control benchmarks Tandem's control plane on a 3-node cluster of
// network namespaces: metadata propose latency, leader failover and idle
// memory (see package bench for the method). It writes control.json and
// control.md to -out and prints the Markdown.
//
// Owner: the bench maintainers.
//
//	go run ./bench/control -bin ./bin -out bench/results [-proposals 1000] [-kills 20]
//
// It must run as root (namespaces) from inside the module (for building).
//
// Invariant: every measurement starts from a healthy cluster (3/3 voters
// online, quorate, one leader): each kill round restarts the node it killed
// and waits until the cluster is whole again before the next one, and only
// successful calls are timed (failed ones are counted).
package main
