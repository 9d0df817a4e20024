package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newVMDiskCmd(a *app) *cobra.Command {
	return newNounCmd("disk", "Add, grow or detach a VM's disks", newVMDiskAddCmd(a), newVMDiskResizeCmd(a), newVMDiskDetachCmd(a))
}

// parseDiskAdd reads vm disk add's flags: exactly one of --disk (a new
// volume, as vm create's --disk) and --disk-volume (an existing one).
func parseDiskAdd(disk, volume string) (*tandemv1.VMDisk, error) {
	switch {
	case disk == "" && volume == "":
		return nil, usageErrorf("give a new disk (--disk SIZE[,replicas=N] or --disk SIZE,backend=rbd) or an existing volume (--disk-volume VOL)")
	case disk != "" && volume != "":
		return nil, usageErrorf("--disk and --disk-volume: give one disk, new or existing")
	case volume != "":
		if err := validate.VolumeName(volume); err != nil {
			return nil, usageErrorf("--disk-volume: %s", validate.Message(err))
		}
		return &tandemv1.VMDisk{Volume: volume}, nil
	}
	d, err := parseDiskFlag(disk)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if err := validate.VolumeSize(d.SizeBytes); err != nil {
		return nil, usageErrorf("--disk %q: %s", disk, validate.Message(err))
	}
	return d, nil
}

func newVMDiskAddCmd(a *app) *cobra.Command {
	var disk, volume string
	cmd := &cobra.Command{
		Use:   "add VM (--disk SIZE[,replicas=N|,backend=rbd[,storage=S][,pool=P]] | --disk-volume VOL)",
		Short: "Add a disk; a running VM gets it at once (PCI hot-plug)",
		Long: `Add a disk to VM, after its other disks: a new volume VM-diskN (the first
free N) of SIZE, as 'vm create --disk' makes them (replicated, 2 replicas by
default, its primary on the VM's node; or on Ceph RBD, owned by the VM's
node), or an existing volume that no VM uses (--disk-volume). For a running
VM an existing replicated volume must have its primary on the VM's node (an
RBD one its owner): a VM runs where its disks are served.

A running VM gets the disk at once (PCI hot-plug; the guest sees a new
virtio disk). If that fails, nothing is recorded and a volume made for it is
deleted again. A stopped VM gets it at its next start. The first disk stays
the one the VM boots from.`,
		Example: `  tandem vm disk add web --disk 20G
  tandem vm disk add web --disk 20G,replicas=3
  tandem vm disk add web --disk 100G,backend=rbd,storage=ceph1
  tandem vm disk add web --disk-volume data`,
		Args: argsNamed("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDiskAdd(disk, volume)
			if err != nil {
				return err
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.AddDisk(ctx, &tandemv1.AddVMDiskRequest{Name: args[0], Disk: d})
			}, writeVM)
		},
	}
	cmd.Flags().StringVar(&disk, "disk", "", "new disk SIZE[,replicas=N] (replicated), or SIZE,backend=rbd[,storage=S][,pool=P] (Ceph RBD)")
	cmd.Flags().StringVar(&volume, "disk-volume", "", "existing volume as the disk")
	return cmd
}

func newVMDiskDetachCmd(a *app) *cobra.Command {
	var del bool
	cmd := &cobra.Command{
		Use:   "detach VM VOLUME [--delete]",
		Short: "Detach a disk other than the first; a running guest must release it",
		Long: `Detach VM's disk on volume VOLUME ('tandem vm show' lists them); the first
disk, which the VM boots from, cannot be. A running VM's guest is asked to
release it (PCI hot-unplug) and has 30 s to; only then is the detach
recorded, so a guest that keeps the disk leaves everything as it was. The
volume stays, unless --delete deletes it once it is detached.`,
		Example: `  tandem vm disk detach web web-disk1
  tandem vm disk detach web web-disk1 --delete`,
		Args: argsNamed("VM", "VOLUME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validate.VolumeName(args[1]); err != nil {
				return usageErrorf("VOLUME: %s", validate.Message(err))
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.DetachDisk(ctx, &tandemv1.DetachVMDiskRequest{Name: args[0], Volume: args[1], Delete: del})
			}, writeVM)
		},
	}
	cmd.Flags().BoolVar(&del, "delete", false, "delete the volume once it is detached")
	return cmd
}

func newVMDiskResizeCmd(a *app) *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "resize VM VOLUME --size SIZE",
		Short: "Grow a VM's disk; a running guest sees the new size at once",
		Long: `Grow the disk of VM on volume VOLUME (vm show lists them) to SIZE: a larger
size only, a multiple of 4 KiB; shrinking would discard data and is refused,
and nothing changes.

A replicated disk grows on every replica first (as 'tandem volume resize'),
then the node running the VM reconnects QEMU to the grown export and tells
the guest (a virtio capacity change). An RBD disk of a running VM is grown
by the VM's QEMU, which holds the image's lock; a stopped VM's disk grows
through the volume's owner and the guest sees it at its next start.
The guest's partitions and file systems are its own to grow.`,
		Example: `  tandem vm disk resize web web-disk0 --size 40G`,
		Args:    argsNamed("VM", "VOLUME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sizeBytes, err := requiredSize(size)
			if err != nil {
				return err
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.ResizeDisk(ctx, &tandemv1.ResizeVMDiskRequest{Name: args[0], Volume: args[1], SizeBytes: sizeBytes})
			}, writeVM)
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "new size, e.g. 40G (required; 1024-based units)")
	return cmd
}

// requiredSize parses a resize's --size, which has no default.
func requiredSize(size string) (int64, error) {
	if size == "" {
		return 0, usageErrorf("--size is required (e.g. --size 40G)")
	}
	n, err := parseSize(size)
	if err != nil {
		return 0, usageErrorf("--size: %v", err)
	}
	return n, nil
}
