// Package layers holds no code: its test enforces Tandem's package layering,
// so that a forbidden import fails the build's tests instead of surviving
// review. The rules, one table in layers_test.go, say which dependencies each
// layer may never have, directly or through another package.
//
// Owner: the daemon maintainers.
//
// The rules:
//   - the data path (blockstore, blockstore/nbd, blockstore/rbd, blockstore/uring, replication and their
//     helpers internal/bufpool, internal/workers, internal/batchwrite)
//     depends on nothing above it: no Raft (dragonboat, consensus), no gRPC,
//     no PKI, no compute, no libvirt, no daemon. What it needs from those
//     layers it is handed as small interfaces and functions
//     (replication.Authority, Fencer, Authorize), so a volume's I/O can be
//     tested with real clients alone, and a Raft or gRPC change cannot alter
//     it;
//   - ha and internal/placement are pure logic: the standard library only;
//   - internal/nodedir (the data directory's files) is the standard library
//     only, so any subsystem may write its files through it;
//   - internal/sealed (sealing secrets with the cluster secret) is the
//     standard library only;
//   - internal/cephtest (the tests' micro Ceph cluster) is the standard
//     library only: it runs Ceph's binaries, so it needs no cgo;
//   - internal/cephholders (the processes that may hold a Ceph client) is
//     the standard library only: it reads /proc;
//   - internal/validate (the rules for names, sizes and paths in requests)
//     and internal/refusal (rate limits and aggregated logs of refused
//     requests) are the standard library only, so any layer may use them;
//   - consensus keeps Raft state and knows no gRPC, libvirt, compute or
//     daemon; it takes the replica state type from replication, below it;
//   - consensus/raftnet, the Raft transport, carries dragonboat's messages
//     and knows nothing else of Tandem: its TLS policy (certificates,
//     revocation) is handed to it as functions;
//   - compute runs VMs and knows no Raft and no daemon;
//   - fencing and netannounce are mechanisms the daemon drives: no Raft, no
//     daemon;
//   - internal/units and internal/settings describe values: no gRPC, no Raft;
//   - internal/metrics reads what it exports through small interfaces: no
//     daemon, no gRPC, no compute;
//   - the subsystems split out of the daemon (internal/membership,
//     internal/cluster, internal/volume, internal/recovery, internal/images) and what they
//     share (internal/state, internal/apierr) depend on neither the daemon
//     nor compute: they get what they need through state.State and small
//     interfaces; internal/vmm (which drives compute), internal/api and
//     internal/peers may use compute or gRPC but never the daemon;
//   - internal/faultfs (the tests' fault-injecting FUSE filesystem) is
//     go-fuse and the standard library, no Tandem package, and the shipped
//     commands (tandemd, tandem, tandem-install) never depend on it;
//   - internal/netdelay (the tests' NFQUEUE packet delayer) is go-nfqueue
//     and the standard library, no Tandem package, and the shipped
//     commands never depend on it either;
//   - chaos, the fault-schedule runner, drives the product from outside
//     (CLI, NBD, processes, the network): no daemon, consensus,
//     replication or blockstore;
//   - internal/daemon wires everything together, and only commands (cmd/)
//     may import it.
//
// Only non-test imports are checked: a test may use whatever it needs, and
// an import cycle through a test is refused by the go command anyway.
//
// Invariants: every package of the module obeys the rules above
// (layers_test.go), and every package has a doc.go whose package comment
// names its owner ("Owner: the <area> maintainers.") and states its
// invariants (docs_test.go, issue 12). Both are plain tests of this package,
// so a violation fails `go test ./...`.
package layers
