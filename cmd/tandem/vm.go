package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newVMCmd(a *app) *cobra.Command {
	return newNounCmd("vm", "Manage virtual machines", &cobra.Command{
		Use:   "list",
		Short: "List virtual machines",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.VM.List(cmd.Context(), &tandemv1.ListVMsRequest{})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "no VMs")
				return err
			})
		},
	})
}
