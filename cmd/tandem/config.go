package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newClusterConfigCmd(a *app) *cobra.Command {
	return newNounCmd("config", "Show and change cluster-wide settings",
		newClusterConfigGetCmd(a),
		newClusterConfigSetCmd(a),
	)
}

func newClusterConfigGetCmd(a *app) *cobra.Command {
	var defaults bool
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Show the cluster settings",
		Long: `Show the cluster settings that were set explicitly, or with --defaults every
known setting with the value in force, its default, its unit and what it does.`,
		Example: `  tandem cluster config get
  tandem cluster config get --defaults
  tandem cluster config get --defaults -o json`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			write := writeConfig
			if defaults {
				write = writeConfigDefaults
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ClusterConfig, error) {
				return c.Cluster.GetConfig(ctx, &tandemv1.GetConfigRequest{Defaults: defaults})
			}, write)
		},
	}
	cmd.Flags().BoolVar(&defaults, "defaults", false, "list every known setting with its value in force, default and unit")
	return cmd
}

func newClusterConfigSetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change cluster settings (an empty VALUE deletes the setting)",
		Long: `Change cluster settings. Every key must be a known setting and every value
must parse and be in range, or nothing is changed; 'tandem cluster config get
--defaults' lists the settings. Durations are Go durations (500ms, 3s, 1m).
Rates take the units of --size (bare number = bytes, K/M/G/T or KiB/MiB/GiB/TiB,
all 1024-based), optionally followed by "/s"; 0 is unlimited. An empty VALUE
deletes the setting, which goes back to its default.`,
		Example: `  tandem cluster config set resync.rate=100M
  tandem cluster config set resync.rate=100MiB/s
  tandem cluster config set ha.dead_timeout=5s ha.self_fence_lease=6s
  tandem cluster config set replication.data_stream=plain   # only on a dedicated, trusted backend network
  tandem cluster config set resync.rate=     # back to the default (unlimited)`,
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
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ClusterConfig, error) {
				return c.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: values})
			}, writeConfig)
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
		_, err := fmt.Fprintln(w, "(no settings; 'tandem cluster config get --defaults' shows the defaults)")
		return err
	}
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "KEY\tVALUE")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\n", k, cfg.Values[k])
	}
	return tw.Flush()
}

// writeConfigDefaults prints every known setting; a value that was set
// explicitly is marked with '*'. Stored keys that are not known settings,
// or whose value no longer parses, are pointed out after the table.
func writeConfigDefaults(w io.Writer, cfg *tandemv1.ClusterConfig) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "KEY\tVALUE\tDEFAULT\tUNIT\tDESCRIPTION")
	known := map[string]*tandemv1.ConfigSetting{}
	for _, s := range cfg.GetSettings() {
		known[s.GetKey()] = s
		v := s.GetValue()
		if s.GetSet() {
			v += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.GetKey(), v, s.GetDefaultValue(), s.GetUnit(), s.GetDescription())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "(* set explicitly; the others are defaults)")
	for _, k := range slices.Sorted(maps.Keys(cfg.GetValues())) {
		v := cfg.GetValues()[k]
		switch s := known[k]; {
		case s == nil:
			fmt.Fprintf(w, "warning: stored key %s=%q is not a known setting and has no effect; delete it with 'tandem cluster config set %s='\n", k, v, k)
		case !s.GetSet():
			fmt.Fprintf(w, "warning: stored value %s=%q is not valid, the default %s is in force; fix it with 'tandem cluster config set %s=VALUE'\n", k, v, s.GetDefaultValue(), k)
		}
	}
	return nil
}
