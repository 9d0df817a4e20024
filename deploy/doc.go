// Package deploy holds what installs Tandem on a machine: the systemd unit
// (tandemd.service), the sample configuration (tandem.yaml, every key with
// its default), the tandemd man page and the Debian package's maintainer
// scripts, built into a .deb by build-deb.sh ('make deb'), and in iso/ the
// appliance ISO: build-iso.sh ('make iso': Debian 12 from the host's apt
// mirror, the .deb and cmd/tandem-install on a live-boot squashfs, made a
// BIOS+UEFI hybrid image by grub-mkrescue), its GRUB menu and the
// installer's and first boot's units. It has no Go code of its own; its
// tests build the package and check it, and e2e/appliance_test.go ('make
// test-appliance') installs the ISO under QEMU and joins it to a cluster.
//
// Owner: the appliance maintainers.
//
// Invariants:
//   - nothing starts before /etc/tandem/tandem.yaml exists (the unit's
//     ConditionPathExists), and the package never deletes /var/lib/tandem;
//   - stopping or restarting tandemd leaves the VMs running (KillMode=process);
//   - the sample names every key tandemd reads (TestSampleConfigNamesEveryKey);
//   - the package is lintian-clean (TestDebianPackage);
//   - the ISO holds only Debian 12 packages from the mirror the build
//     machine's apt sources name (no host is written in build-iso.sh), plus
//     the .deb and tandem-install; the installer runs only when the kernel
//     command line has tandem.install (the ISO's menu), never on the
//     installed system.
package deploy
