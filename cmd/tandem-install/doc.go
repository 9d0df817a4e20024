// Command tandem-install is the appliance installer on the Tandem ISO and
// the installed system's first-boot step.
//
// 'tandem-install install' runs on the live system (tandem-install.service,
// only when the kernel command line has tandem.install=). Its answers come
// from an answer file (YAML, answer.yaml on a drive labelled TANDEM) and
// tandem.KEY=VALUE kernel arguments (unattended), or from prompts on tty1
// or a serial console (interactive). It partitions the disk GPT (BIOS boot,
// ESP, root, data), copies the live squashfs onto the root, writes the
// node's files (tandem.yaml with data_dir on the data partition,
// systemd-networkd for the backend network and the VM bridge, fstab, host
// name, root password or SSH key, SSH host keys, a machine id), installs
// grub for BIOS and UEFI and reboots. 'tandem-install firstboot' runs on the
// installed system (tandem-firstboot.service) and creates or joins the
// cluster through the local tandemd, retrying with backoff.
//
// Owner: the appliance maintainers.
//
// Invariants:
//   - every refusal (invalid answers, a missing disk, a disk holding a
//     partition table or file system without wipe, a mounted disk, the
//     installer's own medium or answer drive, a disk too small) happens
//     before the first write to any disk, and exits with its own code
//     (2 to 5) after saying so on every console and in the log;
//   - the disk check only reads (its own MBR and GPT checks plus blkid's
//     probe); a disk it cannot check is not touched;
//   - the tandem.yaml it writes passes tandemd's own parser and validation;
//   - first boot never gives up silently: each failed attempt is shown on
//     the consoles and in the journal with what to do, then retried with
//     backoff (5 s doubling to 5 min); the file holding the join token is
//     removed once the node is a member.
package main
