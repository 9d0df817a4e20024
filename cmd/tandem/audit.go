package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newAuditCmd(a *app) *cobra.Command {
	var (
		node, action, since string
		limit               uint32
	)
	cmd := &cobra.Command{
		Use:   "audit [--node NODE] [--action PREFIX] [--since DURATION|TIME] [--limit N]",
		Short: "Show the audit trail of administrative actions",
		Long: `Show the replicated audit trail: who (which node's API, and which API
credential: a name from 'tandem credential list', or local@NODE for a node's
unix socket) changed what and when: cluster and volume creation, deletions, configuration, node joins and
removals, fencing setup, VM changes. The cluster keeps the last 500 entries.

--since takes a duration back from now (90m, 24h) or an RFC 3339 time.`,
		Example: `  tandem audit
  tandem audit --action volume --since 24h
  tandem audit --node n1 --limit 20 -o json`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &tandemv1.AuditRequest{Node: node, Action: action, Limit: limit}
			if since != "" {
				at, err := parseSince(since, time.Now())
				if err != nil {
					return usageErrorf("--since: %v", err)
				}
				req.Since = timestamppb.New(at)
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.AuditResponse, error) {
				return c.Cluster.Audit(ctx, req)
			}, writeAudit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "only actions made through this node")
	f.StringVar(&action, "action", "", "only actions starting with this (volume, vm-create, config-set, ...)")
	f.StringVar(&since, "since", "", "only entries after this: a duration back from now (24h) or an RFC 3339 time")
	f.Uint32Var(&limit, "limit", 0, "only the newest N entries (default all)")
	return cmd
}

// parseSince reads "24h" as that long before now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q is negative; give how long back, e.g. 24h", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (90m, 24h) nor an RFC 3339 time (2026-12-01T08:00:00Z)", s)
	}
	return t, nil
}

func writeAudit(w io.Writer, resp *tandemv1.AuditResponse) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "TIME\tNODE\tCREDENTIAL\tACTION\tDETAIL")
	for _, e := range resp.GetEntries() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", formatTime(e.GetAt()), orDash(e.GetNode()), orDash(e.GetCredential()), orDash(e.GetAction()), e.GetDetail())
	}
	if len(resp.GetEntries()) == 0 {
		fmt.Fprintln(tw, "(no entries match)")
	}
	return tw.Flush()
}
