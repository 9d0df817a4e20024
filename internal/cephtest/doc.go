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
// have their own loopback), e2e/rbd_test.go runs the same daemons with
// Options.Addr on the switch's backend address (testcluster's
// SwitchOnBackend) and Options.Wrap {"ip", "netns", "exec", NS}, which
// execs, so the recorded PIDs are the daemons'; every node then reaches
// the monitor and the OSDs over the backend bridge.
//
// # Start-up
//
// Start writes a ceph.conf and every key itself (cephx keys are generated
// here, so no ceph-authtool runs), makes the monitor's store with every
// entity's key imported, makes the OSDs' stores while the monitor starts,
// starts the manager, then registers and starts the OSDs and creates the
// pool in parallel (every call of the Python ceph CLI costs about a
// second), and returns once every OSD is up, the manager is active and
// every placement group is active. The manager loads only its framework
// and one module: all 25 of Debian's Python modules took it half a
// minute. Measured on this 2-core machine while other test suites ran
// (load average 15-25): 12-21 s for three OSDs, 12 s for one.
//
// Invariants:
//   - every daemon runs in its own process group with PR_SET_PDEATHSIG
//     SIGKILL, so a test binary that dies takes its cluster with it; Close
//     SIGKILLs each group by the PID it recorded, reaps it and removes the
//     cluster's directory, so nothing is left behind; Close is idempotent;
//     a directory from TempDir whose creator died (a crashed test binary)
//     is removed by the next TempDir;
//   - the [mon], [mgr] and [osd] sections have their own keyring and no
//     admin socket is set globally (clients would collide on it), as found
//     while bootstrapping on this machine;
//   - every call of the ceph CLI is bounded (a connect timeout and the
//     caller's context), so a dead monitor makes a call fail, not hang;
//   - the package uses the standard library only: it drives Ceph's
//     binaries and needs neither cgo nor go-ceph.
package cephtest
