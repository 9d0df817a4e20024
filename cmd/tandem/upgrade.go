package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newClusterUpgradeStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "upgrade-status",
		Short: "Show which node runs which release, the cluster version and the gated features",
		Long: `Show every node's release and protocol level (as it recorded them when it
last started, so a node that is down is listed too), the cluster version, and
each feature of this release with the nodes it still waits for.

The cluster version is the feature level every member supports. It rises by
itself, in the same Raft entry, when the last node on an older release
restarts on a newer one (or is removed); it never falls, so after that no node
can go back to the older release. Until then, features that change the Raft
commands or the replication wire are refused with the nodes they wait for.

A rolling upgrade, one node at a time:
  tandem node maintenance enable NODE       # evacuates its VMs by live migration
  apt install ./tandem_<version>_amd64.deb  # on NODE: stops and starts tandemd
  tandem cluster status                     # NODE online, volumes in sync
  tandem node maintenance disable NODE --failback balanced`,
		Example: `  tandem cluster upgrade-status
  tandem cluster upgrade-status -o json`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.UpgradeStatusResponse, error) {
				return c.Cluster.UpgradeStatus(ctx, &tandemv1.UpgradeStatusRequest{})
			}, writeUpgradeStatus)
		},
	}
}

func writeUpgradeStatus(w io.Writer, r *tandemv1.UpgradeStatusResponse) error {
	fmt.Fprintf(w, "cluster version: %d\n", r.GetClusterVersion())
	fmt.Fprintf(w, "answered by:     %s (protocol %d)\n\n", orDash(r.GetAnsweredBy()), r.GetProtocol())
	t := &table{header: []string{"NAME", "VERSION", "PROTOCOL", "STATE", "HEALTH", "MAINTENANCE", "UPGRADE"}, empty: "(no nodes)"}
	for _, n := range r.GetNodes() {
		proto, upgrade := "-", "up to date"
		if n.GetProtocol() > 0 {
			proto = fmt.Sprint(n.GetProtocol())
		}
		if n.GetBehind() {
			upgrade = "needed"
		}
		maint := "-"
		if n.GetMaintenance() {
			maint = "yes"
		}
		t.add(orDash(n.GetName()), orDash(n.GetVersion()), proto, orDash(n.GetState()), healthName(n.GetHealth()), maint, upgrade)
	}
	if err := (&listFlags{}).write(w, t); err != nil {
		return err
	}
	fmt.Fprintln(w)
	ft := &table{header: []string{"FEATURE", "LEVEL", "STATE", "WAITING ON", "DESCRIPTION"}, empty: "(no gated features in this release)"}
	for _, f := range r.GetFeatures() {
		state, waiting := "gated", strings.Join(f.GetWaitingOn(), ",")
		if f.GetEnabled() {
			state = "enabled"
		}
		ft.add(f.GetName(), fmt.Sprint(f.GetLevel()), state, orDash(waiting), f.GetDescription())
	}
	if err := (&listFlags{}).write(w, ft); err != nil {
		return err
	}
	if s := r.GetNextStep(); s != "" {
		fmt.Fprintf(w, "\nnext: %s\n", s)
	}
	return nil
}

func newNodeNoteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "note NODE TEXT",
		Short: "Set an operator's note on a node (\"\" clears it)",
		Long: `Set a free-text note on a node (at most 256 bytes, one line), shown by
'node list -o json' and 'node show'. An empty TEXT clears it.

Notes are a feature of protocol level 2 (node-notes): while a node still runs
an older release the note is refused, naming those nodes; see
'tandem cluster upgrade-status'.`,
		Example: `  tandem node note n2 "rack 3, PSU replaced 2026-11-30"
  tandem node note n2 ""`,
		Args: argsNamed("NODE", "TEXT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.NodeInfo, error) {
				return c.Node.SetNote(ctx, &tandemv1.SetNodeNoteRequest{Name: args[0], Note: args[1]})
			}, func(w io.Writer, n *tandemv1.NodeInfo) error {
				if n.GetNote() == "" {
					_, err := fmt.Fprintf(w, "note on %s cleared\n", n.GetName())
					return err
				}
				_, err := fmt.Fprintf(w, "note on %s: %s\n", n.GetName(), n.GetNote())
				return err
			})
		},
	}
}
