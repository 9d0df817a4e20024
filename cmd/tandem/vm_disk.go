package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newVMDiskCmd(a *app) *cobra.Command {
	return newNounCmd("disk", "Change a VM's disks", newVMDiskResizeCmd(a))
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
