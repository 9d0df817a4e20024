// Command migration benchmarks Tandem's planned live migration: the outage a
// guest's UDP stream sees and the total migration time, at 100 and 1000
// datagrams per second, over 20 migrations per rate, on a 3-node cluster of
// network namespaces with one libvirtd (QEMU TCG) per host. It writes
// migration.json and migration.md to -out and prints the Markdown.
//
// Owner: the bench maintainers.
//
//	go run ./bench/migration -bin ./bin -out bench/results [-migrations 20] [-rates 100,1000] [-downtime-ms 20]
//
// The method follows the Heartbeat/Xen thesis (E. Braastad, 'Management of
// high availability services using virtualization', master's thesis, Oslo
// University College, 2006, §5.4): a constant-rate UDP stream and its
// inter-arrival gaps. Here the test guest (internal/guest) sends the stream to a receiver on the cluster's
// switch, and the guest's heartbeats also carry its boot number and its
// acknowledged disk counter, so the benchmark checks that the guest never
// restarted and that its disk writes kept being acknowledged.
//
// It must run as root (namespaces) from inside the module (guest image).
//
// Invariant: a live migration never restarts the guest (its boot counter
// stays and its sequence keeps increasing), its acknowledged disk counter
// keeps increasing, and the target becomes the volume's primary; the
// replicas are verified after each series.
package main
