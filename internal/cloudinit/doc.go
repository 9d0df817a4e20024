// Package cloudinit builds the NoCloud seed of a VM (issue 18): an ISO 9660
// volume labelled "cidata" holding user-data, meta-data and optionally
// network-config, which cloud-init in the guest finds by its label on any
// block device.
//
// Owner: the compute maintainers. internal/vmm seals a Seed into the VM's
// record at create (Marshal, then internal/sealed) and builds the ISO on
// the node that starts the VM, or that a live migration moves it to
// (Build), from the record, before QEMU opens it.
//
// The ISO is made by xorriso (Debian package xorriso, in the Makefile's
// apt list and the appliance's package list) in mkisofs emulation, with
// Rock Ridge and Joliet names so the guest sees "user-data", not an 8.3
// name: a field tool every appliance already ships for its own ISO, rather
// than an ISO writer of our own.
//
// Invariants:
//   - Validate bounds every file and the total (MaxTotal), and refuses
//     user-data cloud-init would not run, before anything is recorded;
//   - a seed is built from the record alone, so every node builds the
//     same files; the ISO is written to a temporary name and renamed, so
//     QEMU never opens half of one; the file is mode 0600 (user-data may
//     hold credentials).
package cloudinit
