package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newNodeCmd(a *app) *cobra.Command {
	return newNounCmd("node", "List and remove cluster nodes",
		newNodeListCmd(a),
		newNodeRemoveCmd(a),
	)
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
