package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newHACmd(a *app) *cobra.Command {
	return newNounCmd("ha", "High availability", &cobra.Command{
		Use:   "status",
		Short: "Show HA status",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.HA.Status(cmd.Context(), &tandemv1.HAStatusRequest{})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "HA: nothing to report")
				return err
			})
		},
	})
}
