package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newVMNICCmd(a *app) *cobra.Command {
	return newNounCmd("nic", "Add or remove a VM's NICs", newVMNICAddCmd(a), newVMNICRemoveCmd(a))
}

func newVMNICAddCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "add VM [BRIDGE][,mac=MAC][,ip=ADDR]",
		Short: "Add a NIC; a running VM gets it at once (PCI hot-plug)",
		Long: `Add a virtio NIC to VM, after its other NICs, on BRIDGE (default: each
node's VM bridge), with MAC (default: a generated one; a MAC another VM uses
is refused) and the addresses the guest will use (announced after a restart
elsewhere, as for 'vm create --nic'). A running VM gets the NIC at once; if
that fails, nothing is recorded.`,
		Example: `  tandem vm nic add web vmbr0
  tandem vm nic add web vmbr1,mac=52:54:00:12:34:56,ip=10.0.1.5`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("usage: tandem vm nic add VM [BRIDGE][,mac=MAC][,ip=ADDR]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			nic := &tandemv1.VMNic{}
			if len(args) == 2 {
				var err error
				if nic, err = parseNICFlag(args[1]); err != nil {
					return usageErrorf("%v", err)
				}
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.AddNIC(ctx, &tandemv1.AddVMNicRequest{Name: args[0], Nic: nic})
			}, writeVM)
		},
	}
}

func newVMNICRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "remove VM MAC",
		Short: "Remove a NIC by its MAC; a running guest must release it",
		Long: `Remove VM's NIC with MAC ('tandem vm show' lists them). A running VM's guest
is asked to release it (PCI hot-unplug) and has 30 s to; only then is the
removal recorded, so a guest that keeps the NIC leaves everything as it was.`,
		Example: `  tandem vm nic remove web 52:54:00:12:34:56`,
		Args:    argsNamed("VM", "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.RemoveNIC(ctx, &tandemv1.RemoveVMNicRequest{Name: args[0], Mac: args[1]})
			}, writeVM)
		},
	}
}
