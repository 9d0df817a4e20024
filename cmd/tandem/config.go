package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newClusterConfigCmd(a *app) *cobra.Command {
	return newNounCmd("config", "Show and change cluster-wide settings",
		newClusterConfigGetCmd(a),
		newClusterConfigSetCmd(a),
	)
}

func newClusterConfigGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "Show the cluster settings",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Cluster.GetConfig(cmd.Context(), &tandemv1.GetConfigRequest{})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error { return writeConfig(w, resp) })
		},
	}
}

func newClusterConfigSetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change cluster settings (an empty VALUE deletes the setting)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s: missing KEY=VALUE", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			values := map[string]string{}
			for _, kv := range args {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErrorf("%q: want KEY=VALUE", kv)
				}
				values[k] = v
			}
			c, err := a.dial(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Cluster.SetConfig(cmd.Context(), &tandemv1.SetConfigRequest{Values: values})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error { return writeConfig(w, resp) })
		},
	}
}

func writeConfig(w io.Writer, cfg *tandemv1.ClusterConfig) error {
	keys := make([]string, 0, len(cfg.GetValues()))
	for k := range cfg.GetValues() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		_, err := fmt.Fprintln(w, "(no settings)")
		return err
	}
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "KEY\tVALUE")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\n", k, cfg.Values[k])
	}
	return tw.Flush()
}
