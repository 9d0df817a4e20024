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
	var memory, cpuModel string
	var vcpus uint32
	cmd := &cobra.Command{
		Use:   "set VM [--vcpus N] [--memory SIZE] [--cpu-model MODEL|default]",
		Short: "Change a VM's vCPUs, memory and CPU model; says when the change applies",
		Long: `Change a VM's vCPUs, memory and CPU model. The values are checked as 'vm
create' checks them (1 to 64 vCPUs and no more than the node with the most
CPUs has; at least 64 MiB and no more than the largest node offers VMs; a CPU
model every node's libvirt knows, see virsh domcapabilities) before anything
changes. --cpu-model default returns the VM to the cluster's model (setting
vm.cpu_model). A stopped VM gets them at its next start. A running VM keeps
its current ones until it restarts (vm stop and vm start, or an HA restart);
a live migration keeps the running values. The answer says which.`,
		Example: `  tandem vm set web --memory 4G
  tandem vm set web --vcpus 4 --memory 8G
  tandem vm set web --cpu-model Nehalem
  tandem vm set web --cpu-model default`,
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
			if cmd.Flags().Changed("cpu-model") {
				if cpuModel == "" {
					return usageErrorf("--cpu-model: give a model, or default for the cluster's")
				}
				req.CpuModel = proto.String(cpuModel)
			}
			if req.Vcpus == nil && req.MemoryMib == nil && req.CpuModel == nil {
				return usageErrorf("give --vcpus, --memory and/or --cpu-model")
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.SetVMResponse, error) {
				return c.VM.Set(ctx, req)
			}, writeVMSet)
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&vcpus, "vcpus", 0, "virtual CPUs (1 to 64)")
	f.StringVar(&memory, "memory", "", "memory, e.g. 4G (at least 64M; 1024-based units)")
	f.StringVar(&cpuModel, "cpu-model", "", "libvirt CPU model, e.g. Nehalem, or default (the cluster's vm.cpu_model)")
	return cmd
}

func writeVMSet(w io.Writer, r *tandemv1.SetVMResponse) error {
	if len(r.Changes) == 0 {
		model := r.GetVm().GetCpuModel()
		if model == "" {
			model = "the cluster's"
		}
		_, err := fmt.Fprintf(w, "VM %s: nothing changed (%d vCPUs, %d MiB, CPU model %s)\n", r.GetVm().GetName(), r.GetVm().GetVcpus(), r.GetVm().GetMemoryMib(), model)
		return err
	}
	_, err := fmt.Fprintf(w, "VM %s: %s; applies %s\n", r.GetVm().GetName(), strings.Join(r.Changes, ", "), r.Applies)
	return err
}
