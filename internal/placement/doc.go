// Package placement decides where VMs run: which node starts a VM, whether
// a start keeps the cluster N+1, in which order and where a dead node's
// VMs restart, where maintenance evacuates to and what a balanced failback
// brings back; and which nodes hold a new volume's replicas, and which of
// them is its first primary (volumes.go).
//
// Owner: the HA maintainers.
//
// Invariant: every function here is pure. No I/O, no clocks, no
// goroutines, no package-level state; the same Cluster gives the same
// answer, and every tie is broken by name. The daemon gathers the inputs
// (metadata, each node's compute status, each volume's replica states) and
// carries the decisions out.
//
// The rules, in the order CanHost applies them (the first that fails is
// the reason given):
//
//  1. the node is a member of the cluster;
//  2. it is not a witness (witnesses hold no disks and run no VMs);
//  3. it is not in maintenance;
//  4. its compute is up (libvirtd reachable, the node answering);
//  5. it holds an UpToDate replica of every volume of the VM, in the VM's
//     disk order (anything else misses acknowledged writes, or is no
//     replica at all; a volume whose state is unknown counts as no
//     replica);
//  6. no other started VM of the VM's anti-affinity group runs there;
//  7. its free memory (capacity less the memory of the started VMs placed
//     there, the VM's own share excepted when it is placed there already)
//     covers the VM.
//
// Place ranks the nodes that pass: fewest started VMs first, then most
// free memory, then name. Start prefers the node the VM last ran on when
// that node can host it.
//
// N+1 admission (Admit): with the VM started on the chosen node, for every
// node's failure, the started VMs of that node, in recovery order (higher
// priority first, then more memory, then name), must each find a node that
// passes CanHost with the memory of the VMs already restarted in that
// simulation counted; candidates are tried in name order, first fit.
//
// Recovery (RecoveryOrder, Recover): a dead node's started VMs not in HA
// error restart in recovery order, each on the best node Place gives with
// the dead node excluded, the earlier restarts counted.
//
// Maintenance (Evacuate, Failback): each started VM on the node, by name,
// moves to the best ranked node whose move keeps N+1 (or the best ranked
// one when forced); on leaving maintenance a balanced failback brings back
// each started VM evacuated from the node when the node can host it.
package placement
