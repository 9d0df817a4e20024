// Package deploy holds what installs Tandem on a machine: the systemd unit
// (tandemd.service), the sample configuration (tandem.yaml, every key with
// its default), the tandemd man page and the Debian package's maintainer
// scripts, built into a .deb by build-deb.sh ('make deb'). It has no Go
// code of its own; its tests build the package and check it.
//
// Owner: the appliance maintainers.
//
// Invariants:
//   - nothing starts before /etc/tandem/tandem.yaml exists (the unit's
//     ConditionPathExists), and the package never deletes /var/lib/tandem;
//   - stopping or restarting tandemd leaves the VMs running (KillMode=process);
//   - the sample names every key tandemd reads (TestSampleConfigNamesEveryKey);
//   - the package is lintian-clean (TestDebianPackage).
package deploy
