package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newNodeShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NODE",
		Short: "Show one node: health, disks, compute, and the VMs and volumes on it",
		Example: `  tandem node show n1
  tandem node show n1 -o json`,
		Args: argsNamed("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				nodes, err := c.Node.List(ctx, &tandemv1.ListNodesRequest{})
				if err != nil {
					return err
				}
				i := slices.IndexFunc(nodes.GetNodes(), func(n *tandemv1.NodeInfo) bool { return n.GetName() == args[0] })
				if i < 0 {
					var names []string
					for _, n := range nodes.GetNodes() {
						names = append(names, n.GetName())
					}
					return fmt.Errorf("no node named %q (nodes: %s)", args[0], strings.Join(names, ", "))
				}
				n := nodes.GetNodes()[i]
				if a.output == "json" {
					return writeJSON(a.stdout, n)
				}
				// What runs and is stored there is extra: a failure to list it
				// leaves those sections out with a note rather than failing.
				vms, vmErr := c.VM.List(ctx, &tandemv1.ListVMsRequest{})
				vols, volErr := c.Volume.List(ctx, &tandemv1.ListVolumesRequest{})
				return writeNodeShow(a.stdout, n, vms, vmErr, vols, volErr)
			})
		},
	}
}

func writeNodeShow(w io.Writer, n *tandemv1.NodeInfo, vms *tandemv1.ListVMsResponse, vmErr error, vols *tandemv1.ListVolumesResponse, volErr error) error {
	tw := newTabWriter(w)
	leader := "no"
	if n.GetLeader() {
		leader = "yes"
	}
	fmt.Fprintf(tw, "name:\t%s\n", n.GetName())
	fmt.Fprintf(tw, "replica id:\t%d\n", n.GetReplicaId())
	fmt.Fprintf(tw, "role:\t%s\n", roleName(n.GetRole()))
	fmt.Fprintf(tw, "vote:\t%s\n", voteName(n.GetVote()))
	fmt.Fprintf(tw, "state:\t%s\n", nodeState(n))
	fmt.Fprintf(tw, "health:\t%s\n", healthName(n.GetHealth()))
	if d := n.GetHealthDetail(); d != "" {
		fmt.Fprintf(tw, "health detail:\t%s\n", d)
	}
	fmt.Fprintf(tw, "leader:\t%s\n", leader)
	fmt.Fprintf(tw, "rtt:\t%s\n", formatRTT(n))
	fmt.Fprintf(tw, "backend:\t%s\n", orDash(n.GetBackendAddr()))
	fmt.Fprintf(tw, "raft:\t%s\n", orDash(n.GetRaftAddr()))
	fmt.Fprintf(tw, "admin:\t%s\n", orDash(n.GetAdminAddr()))
	fmt.Fprintf(tw, "joined:\t%s\n", formatTime(n.GetJoinedAt()))
	for i, d := range n.GetDisks() {
		fmt.Fprintf(tw, "disk %d:\t%s (%s): %s free of %s\n", i, d.GetPath(), orDash(d.GetKind()), formatBytes(d.GetFreeBytes()), formatBytes(d.GetCapacityBytes()))
	}
	cs := n.GetCompute()
	switch {
	case cs == nil:
		fmt.Fprintf(tw, "compute:\t-\n")
	case !cs.GetAvailable():
		fmt.Fprintf(tw, "compute:\tunavailable: %s\n", orDash(cs.GetReason()))
	default:
		fmt.Fprintf(tw, "compute:\t%s of %s reserved by VMs; %s free on the host\n",
			formatBytes(int64(cs.GetUsedMib())<<20), formatBytes(int64(cs.GetCapacityMib())<<20), formatBytes(int64(cs.GetHostFreeMib())<<20))
	}
	if a := cs.GetAccel(); a != "" {
		fmt.Fprintf(tw, "accel:\t%s (%s)\n", a, orDash(cs.GetAccelDetail()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nVMs:")
	if vmErr != nil {
		fmt.Fprintf(w, "  (cannot list VMs: %v)\n", vmErr)
	} else {
		t := &table{header: []string{"NAME", "STATE", "DESIRED", "MEMORY"}, empty: "(none)"}
		for _, v := range vms.GetVms() {
			if v.GetNode() == n.GetName() {
				t.add(v.GetName(), dash(v.GetState()), dash(v.GetDesired()), formatBytes(int64(v.GetMemoryMib())<<20))
			}
		}
		if err := (&listFlags{}).write(w, t); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "\nvolumes with a replica here:")
	if volErr != nil {
		fmt.Fprintf(w, "  (cannot list volumes: %v)\n", volErr)
		return nil
	}
	t := &table{header: []string{"NAME", "ROLE", "STATE", "VOLUME-STATE"}, empty: "(none)"}
	for _, v := range vols.GetVolumes() {
		for _, r := range v.GetReplicas() {
			if r.GetNode() != n.GetName() {
				continue
			}
			role := "secondary"
			if r.GetPrimary() {
				role = "primary"
			}
			t.add(v.GetName(), role, replicaStateName(r.GetState()), orDash(v.GetState()))
		}
	}
	return (&listFlags{}).write(w, t)
}
