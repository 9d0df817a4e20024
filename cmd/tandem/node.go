package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newNodeCmd(a *app) *cobra.Command {
	return newNounCmd("node", "List and remove cluster nodes",
		newNodeListCmd(a),
		newNodeShowCmd(a),
		newNodeRemoveCmd(a),
		newNodeMaintenanceCmd(a),
		newNodeFenceConfigCmd(a),
		newNodeFenceCmd(a),
	)
}

func newNodeMaintenanceCmd(a *app) *cobra.Command {
	var failback string
	var force bool
	cmd := &cobra.Command{
		Use:   "maintenance enable|disable NODE",
		Short: "Evacuate a node by live migration and keep new VMs off it",
		Long: `enable commits the maintenance mode (it survives restarts and reboots and
blocks new placements), then live-migrates every VM away, respecting
anti-affinity and N+1 (--force relaxes N+1). disable ends it; --failback
balanced moves VMs back to even out the load, the default "stay" leaves them.`,
		Args: argsNamed("enable|disable", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var enable bool
			switch args[0] {
			case "enable":
				enable = true
			case "disable":
			default:
				return usageErrorf("want enable or disable, not %q", args[0])
			}
			c, err := a.dial(cmd, migrateTimeout)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.Node.Maintenance(cmd.Context(), &tandemv1.NodeMaintenanceRequest{Name: args[1], Enable: enable, Failback: failback, Force: force})
			if err != nil {
				return err
			}
			var last *tandemv1.NodeMaintenanceProgress
			for {
				p, err := st.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				last = p
				if p.Node == nil {
					fmt.Fprintln(a.stderr, p.Message)
				}
			}
			if last == nil || last.Node == nil {
				return errors.New("maintenance change ended without a result; check 'tandem node list'")
			}
			return a.print(last, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "node %s maintenance %v: %s\n", last.Node.Name, last.Node.Maintenance, last.Message)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&failback, "failback", "stay", "on disable: stay or balanced")
	cmd.Flags().BoolVar(&force, "force", false, "evacuate even where N+1 would break")
	return cmd
}

func newNodeListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the cluster's nodes",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Node.List(cmd.Context(), &tandemv1.ListNodesRequest{})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				if !resp.GetQuorate() {
					fmt.Fprintln(a.stderr, "NOT QUORATE: this list is the answering node's local view")
				}
				return writeNodes(w, resp.GetNodes(), true)
			})
		},
	}
}

func newNodeRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a node from the cluster membership",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Node.Remove(cmd.Context(), &tandemv1.RemoveNodeRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				n := resp.GetNode()
				if n == nil {
					fmt.Fprintf(w, "removed node %q\n", args[0])
					return nil
				}
				fmt.Fprintf(w, "removed node %q (replica %d, state %s)\n", n.GetName(), n.GetReplicaId(), orDash(n.GetState()))
				return nil
			})
		},
	}
}
