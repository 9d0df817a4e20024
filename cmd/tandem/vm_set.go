package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newVMSetCmd(a *app) *cobra.Command {
	var memory string
	var vcpus uint32
	cmd := &cobra.Command{
		Use:   "set VM [--vcpus N] [--memory SIZE]",
		Short: "Change a VM's vCPUs and memory; says when the change applies",
		Long: `Change a VM's vCPUs and memory. The values are checked as 'vm create' checks
them (1 to 64 vCPUs and no more than the node with the most CPUs has; at
least 64 MiB and no more than the largest node offers VMs) before anything
changes. A stopped VM gets them at its next start. A running VM keeps its
current ones until it restarts (vm stop and vm start, or an HA restart); a
live migration keeps the running values. The answer says which.`,
		Example: `  tandem vm set web --memory 4G
  tandem vm set web --vcpus 4 --memory 8G`,
		Args: argsNamed("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tandemv1.SetVMRequest{Name: args[0]}
			if cmd.Flags().Changed("vcpus") {
				req.Vcpus = proto.Uint32(vcpus)
			}
			if cmd.Flags().Changed("memory") {
				b, err := parseSize(memory)
				if err != nil {
					return usageErrorf("--memory: %v", err)
				}
				req.MemoryMib = proto.Uint32(uint32(b >> 20))
			}
			if req.Vcpus == nil && req.MemoryMib == nil {
				return usageErrorf("give --vcpus and/or --memory")
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.SetVMResponse, error) {
				return c.VM.Set(ctx, req)
			}, writeVMSet)
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&vcpus, "vcpus", 0, "virtual CPUs (1 to 64)")
	f.StringVar(&memory, "memory", "", "memory, e.g. 4G (at least 64M; 1024-based units)")
	return cmd
}

func writeVMSet(w io.Writer, r *tandemv1.SetVMResponse) error {
	if len(r.Changes) == 0 {
		_, err := fmt.Fprintf(w, "VM %s: nothing changed (%d vCPUs, %d MiB)\n", r.GetVm().GetName(), r.GetVm().GetVcpus(), r.GetVm().GetMemoryMib())
		return err
	}
	_, err := fmt.Fprintf(w, "VM %s: %s; applies %s\n", r.GetVm().GetName(), strings.Join(r.Changes, ", "), r.Applies)
	return err
}
