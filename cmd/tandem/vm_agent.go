package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// writeVMAgent adds the guest agent's lines to vm show (issue 18): the
// guest's addresses when its agent answers, why not otherwise; and after
// vm stop, how the VM went down.
func writeVMAgent(tw *tabwriter.Writer, v *tandemv1.VMInfo) {
	if v.Agent != "" {
		fmt.Fprintf(tw, "Guest agent:\t%s\n", v.Agent)
	}
	if len(v.GuestAddresses) > 0 {
		fmt.Fprintf(tw, "Guest addresses:\t%s\n", strings.Join(v.GuestAddresses, ", "))
	}
	if v.StoppedBy != "" {
		fmt.Fprintf(tw, "Stopped by:\t%s\n", stoppedBy(v.StoppedBy))
	}
}

func stoppedBy(s string) string {
	switch s {
	case "agent":
		return "agent (the guest agent shut the guest down)"
	case "acpi":
		return "acpi (the guest shut down on the ACPI power button)"
	case "destroy":
		return "destroy (powered off: no clean shutdown within the timeout, or --force)"
	}
	return s
}

func newVMFSFreezeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "fsfreeze VM",
		Short: "Freeze a running VM's file systems through its guest agent",
		Long: `Freeze the file systems of a running VM through its guest agent
(guest-fsfreeze-freeze), so that a copy of its disks is consistent. Writes in
the guest block until tandem vm fsthaw. Refused when no agent answers.`,
		Example: "  tandem vm fsfreeze web && <copy> ; tandem vm fsthaw web",
		Args:    argsNamed("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.FSFreezeResponse, error) {
				return c.GuestAgent.FSFreeze(ctx, &tandemv1.VMRequest{Name: args[0]})
			}, writeFSFreeze("frozen"))
		},
	}
}

func newVMFSThawCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "fsthaw VM",
		Short:   "Thaw a VM's file systems frozen by tandem vm fsfreeze",
		Example: "  tandem vm fsthaw web",
		Args:    argsNamed("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.FSFreezeResponse, error) {
				return c.GuestAgent.FSThaw(ctx, &tandemv1.VMRequest{Name: args[0]})
			}, writeFSFreeze("thawed"))
		},
	}
}

func writeFSFreeze(verb string) func(io.Writer, *tandemv1.FSFreezeResponse) error {
	return func(w io.Writer, r *tandemv1.FSFreezeResponse) error {
		_, err := fmt.Fprintf(w, "VM %s on %s: %d file systems %s (agent reports %s)\n", r.Vm, r.Node, r.Filesystems, verb, dash(r.FreezeStatus))
		return err
	}
}
