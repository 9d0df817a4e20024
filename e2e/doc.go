// Package e2e holds Tandem's end-to-end tests. It has no code of its own
// outside its tests. Each test starts a cluster of real tandemd processes on
// simulated hosts, one network namespace per host on a private bridge
// (internal/testcluster), and drives it as an operator would: with the tandem
// CLI, grpcurl and real NBD clients (qemu-img, qemu-io, nbdinfo, fio).
//
// Owner: the test-infrastructure maintainers.
//
// What it covers:
//
//   - the control plane (cluster_test.go): forming and joining, tokens and
//     authentication, leader loss, quorum loss and regain, restarts, a
//     witness, the expected-votes override and the versions the nodes
//     report;
//   - volumes (volume_test.go): the NBD export, no acknowledged write lost
//     when a primary crashes, epoch fencing of a stale or isolated primary,
//     isolation and resync, refused replica metadata, online verify and
//     repair, promotion;
//   - VMs (vm_test.go): lifecycle, live migration and maintenance, a failed
//     migration, creating a disk from an image, with the test guest
//     (internal/guest, its /init being cmd/tandem-guest-agent) under QEMU;
//   - HA (ha_test.go): failover with IPMI fencing against a BMC simulator,
//     operator confirmation, partitions with a witness and the self-fence
//     lease, gratuitous ARP from the new host;
//   - what operators see (operator*_test.go): reports, settings, node
//     removal, volume corner cases and bad input.
//   - API credentials (credential_test.go): roles enforced on every node,
//     revocation in force on every node when revoke returns, the audit
//     naming the credential, a removed node's admin certificate refused.
//   - versions and upgrades (upgrade_test.go): a rolling upgrade of three
//     nodes to a newer build (testcluster.BuildBinariesWith) under a
//     running guest, the gated feature refused until the last node runs
//     it; tandemd stopped with SIGTERM and started under a writing guest.
//   - rejoin (rejoin_test.go): a node whose certificate expired while it
//     was off (and the CA rotated without it) starts stopped, says so, is
//     refused by the members, and rejoins with a token, keeping its data;
//     its replica resyncs incrementally.
//   - ISO images (image_test.go): a GRUB ISO around the test guest is
//     uploaded and copied to every node, a VM with an empty disk boots
//     from it in its CD-ROM drive, migrates live with the image inserted
//     and ejected, media changes on the running VM, and the bad inputs
//     (not ISO 9660, duplicate, missing image, delete while in a drive);
//     a failover of such a VM; a UEFI VM whose NVRAM follows it.
//
// The tests build the binaries themselves: the first test to need them runs
// testcluster.BuildBinaries, which compiles cmd/tandemd and cmd/tandem from
// this module with the version stamp `make build` uses, into a temporary
// directory that TestMain removes at the end. The VM tests build the guest
// image (a Debian kernel and an initramfs) into .cache/guest on first use,
// with scripts/build-guest-image.sh.
//
// Running them needs root (without it the tests skip) on Linux with network
// namespaces; the VM and HA tests also need libvirtd with its QEMU driver and
// qemu-system-x86 (QEMU runs under TCG: no KVM needed), and ipmi_sim and
// ipmitool for the BMCs. `make deps` installs all of it on Debian 12, and
// `make test` runs the package with the rest (go test ./..., -timeout 20m).
// The whole package takes 6 minutes or more on 2 cores; one test alone:
//
//	go test -count=1 -run TestControlPlane ./e2e/
//
// The test binary is also a helper: re-executed inside a node's namespace
// (ip netns exec, os.Args[0]) with TANDEM_TEST_HELPER=hello, TestMain speaks
// to a replica as that node would, prints the status and exits.
//
// Invariants: the package has no code outside its tests; every test's
// cluster is torn down by testcluster (processes killed, namespaces
// deleted) whether it passes or fails, and the binaries it built are removed
// by TestMain; without root the tests skip instead of failing.
package e2e
