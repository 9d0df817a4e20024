// Package cephtest starts a micro Ceph cluster for tests, from Debian 12's
// own Ceph 16.2 "pacific" binaries (ceph-mon, ceph-mgr, ceph-osd and the
// ceph CLI from ceph-common; `make deps` installs them): one monitor, one
// manager and by default three bluestore OSDs on sparse files, with one
// replicated pool for RBD images. It is the real Ceph that the RBD backend
// (blockstore/rbd) and later the end-to-end tests run against; nothing in
// it stands in for Ceph.
//
// Owner: the storage maintainers.
//
// # Addresses
//
// Every cluster binds its daemons to an address of its own in 127.0.0.0/8
// (random unless Options.Addr names one), so clusters of concurrent test
// binaries never share a port and the daemons use Ceph's default ports.
// Clients in the same network namespace reach it through the loopback.
// For the network-namespace cluster of internal/testcluster (whose nodes
// have their own loopback), a later step runs the same daemons with
// Options.Addr on the switch's backend address (testcluster's
// SwitchOnBackend) and Options.Wrap set to enter the switch namespace.
//
// # Start-up
//
// Start writes a ceph.conf and every key itself (cephx keys are generated
// here, so no ceph-authtool runs), makes the monitor's store with every
// entity's key imported, makes the OSDs' stores while the monitor starts,
// registers the OSDs, starts the manager and the OSDs, creates the pool
// and returns once every placement group of the pool is active. Measured
// here: about 6-10 s, most of it bluestore's mkfs and peering.
//
// Invariants:
//   - every daemon runs in its own process group with PR_SET_PDEATHSIG
//     SIGKILL, so a test binary that dies takes its cluster with it; Close
//     SIGKILLs each group by the PID it recorded, reaps it and removes the
//     cluster's directory, so nothing is left behind; Close is idempotent;
//   - the [mon], [mgr] and [osd] sections have their own keyring and no
//     admin socket is set globally (clients would collide on it), as found
//     while bootstrapping on this machine;
//   - every call of the ceph CLI is bounded (a connect timeout and the
//     caller's context), so a dead monitor makes a call fail, not hang;
//   - the package uses the standard library only: it drives Ceph's
//     binaries and needs neither cgo nor go-ceph.
package cephtest
