package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// print writes m as JSON with --output json, else calls table.
func (a *app) print(m proto.Message, table func(w io.Writer) error) error {
	if a.output == "json" {
		return writeJSON(a.stdout, m)
	}
	return table(a.stdout)
}

// writeJSON writes m as one JSON document. Unpopulated fields are included
// so scripts see false/0/"" instead of a missing key.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := adminclient.MarshalJSON(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeStatus prints a cluster status for people.
func writeStatus(w io.Writer, s *tandemv1.ClusterStatus) error {
	if !s.GetInitialized() && s.GetClusterName() != "" {
		// A member that does not run in its cluster: the warning says why.
		fmt.Fprintf(w, "%s belongs to cluster %q (id %s) but DOES NOT RUN IN IT.\n", orDash(s.GetAnsweredBy()), s.GetClusterName(), orDash(s.GetClusterId()))
		writeWarnings(w, s.GetWarnings())
		return nil
	}
	if !s.GetInitialized() {
		fmt.Fprintf(w, "%s is not part of a cluster yet.\n", orDash(s.GetAnsweredBy()))
		fmt.Fprintln(w, "Create one with 'tandem cluster create NAME' or join one with 'tandem cluster join ADDR --token TOKEN'.")
		writeWarnings(w, s.GetWarnings())
		return nil
	}

	tw := newTabWriter(w)
	fmt.Fprintf(tw, "cluster:\t%s (id %s)\n", s.GetClusterName(), orDash(s.GetClusterId()))
	if s.GetQuorate() {
		fmt.Fprintf(tw, "quorate:\tyes\n")
	} else {
		fmt.Fprintf(tw, "quorate:\tNOT QUORATE (this is %s's local view)\n", orDash(s.GetAnsweredBy()))
	}
	fmt.Fprintf(tw, "leader:\t%s\n", orDash(s.GetLeader()))
	fmt.Fprintf(tw, "term:\t%d\n", s.GetTerm())
	fmt.Fprintf(tw, "votes:\t%d online / %d voters\n", s.GetVotesOnline(), s.GetVoters())
	fmt.Fprintf(tw, "quorum:\t%d votes needed\n", s.GetQuorum())
	fmt.Fprintf(tw, "answered by:\t%s\n", orDash(s.GetAnsweredBy()))
	fmt.Fprintf(tw, "applied index:\t%d\n", s.GetAppliedIndex())
	fmt.Fprintf(tw, "cluster version:\t%d (this node: %s, protocol %d)\n", s.GetClusterVersion(), orDash(s.GetVersion()), s.GetProtocol())
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if err := writeNodes(w, s.GetNodes()); err != nil {
		return err
	}
	writeWarnings(w, s.GetWarnings())
	if adv := s.GetAdvisories(); len(adv) > 0 {
		fmt.Fprintln(w)
		for _, m := range adv {
			fmt.Fprintf(w, "note: %s\n", m)
		}
	}

	if audit := s.GetAudit(); len(audit) > 0 {
		fmt.Fprintln(w, "\nrecent audit:")
		tw := newTabWriter(w)
		fmt.Fprintln(tw, "TIME\tNODE\tACTION\tDETAIL")
		for _, e := range audit {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", formatTime(e.GetAt()), orDash(e.GetNode()), orDash(e.GetAction()), e.GetDetail())
		}
		return tw.Flush()
	}
	return nil
}

func writeWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	fmt.Fprintf(w, "\nwarnings (%d):\n", len(warnings))
	for _, m := range warnings {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
}

// formatDisks shows free/capacity of the disk holding volumes, plus a count
// of the others.
func formatDisks(disks []*tandemv1.Disk) string {
	if len(disks) == 0 {
		return "-"
	}
	d := disks[0]
	s := fmt.Sprintf("%s / %s", formatBytes(d.GetFreeBytes()), formatBytes(d.GetCapacityBytes()))
	if len(disks) > 1 {
		s += fmt.Sprintf(" (+%d disks)", len(disks)-1)
	}
	return s
}

// nodeState is the membership state, marked when in maintenance.
func nodeState(n *tandemv1.NodeInfo) string {
	if n.GetMaintenance() {
		return orDash(n.GetState()) + " (maintenance)"
	}
	return orDash(n.GetState())
}

// formatCompute is "used/capacity MiB" for VMs, or why there is none.
func formatCompute(c *tandemv1.ComputeStatus) string {
	switch {
	case c == nil:
		return "-"
	case !c.Available:
		return "unavailable"
	}
	return fmt.Sprintf("%d/%d MiB", c.UsedMib, c.CapacityMib)
}

// writeNodeList is node list's wide table, shaped by the list flags.
func writeNodeList(w io.Writer, nodes []*tandemv1.NodeInfo, lf *listFlags) error {
	t := &table{header: []string{"NAME", "ID", "ROLE", "VOTE", "STATE", "HEALTH", "LEADER", "BACKEND", "ADMIN", "RTT", "DISK FREE", "VM MEMORY", "VERSION", "PROTOCOL"}, empty: "(no nodes)"}
	var details []string
	for _, n := range nodes {
		leader := "-"
		if n.GetLeader() {
			leader = "*"
		}
		t.add(orDash(n.GetName()), fmt.Sprint(n.GetReplicaId()), roleName(n.GetRole()), voteName(n.GetVote()),
			nodeState(n), healthName(n.GetHealth()), leader,
			orDash(n.GetBackendAddr()), orDash(n.GetAdminAddr()), formatRTT(n), formatDisks(n.GetDisks()), formatCompute(n.GetCompute()),
			orDash(n.GetVersion()), formatProtocol(n.GetProtocol()))
		if d := n.GetHealthDetail(); d != "" && n.GetHealth() != tandemv1.Health_HEALTH_ONLINE {
			details = append(details, fmt.Sprintf("%s is %s: %s", orDash(n.GetName()), healthName(n.GetHealth()), d))
		}
	}
	if err := lf.write(w, t); err != nil {
		return err
	}
	if !lf.noHeaders {
		for _, d := range details {
			fmt.Fprintln(w, d)
		}
	}
	return nil
}

// writeNodes is the short node table of cluster status; health details go
// below it so long messages don't break its columns.
func writeNodes(w io.Writer, nodes []*tandemv1.NodeInfo) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "NAME\tROLE\tVOTE\tSTATE\tHEALTH\tLEADER\tBACKEND\tRTT")
	var details []string
	for _, n := range nodes {
		leader := "-"
		if n.GetLeader() {
			leader = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			orDash(n.GetName()), roleName(n.GetRole()), voteName(n.GetVote()),
			nodeState(n), healthName(n.GetHealth()), leader,
			orDash(n.GetBackendAddr()), formatRTT(n))
		if d := n.GetHealthDetail(); d != "" && n.GetHealth() != tandemv1.Health_HEALTH_ONLINE {
			details = append(details, fmt.Sprintf("%s is %s: %s", orDash(n.GetName()), healthName(n.GetHealth()), d))
		}
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(no nodes)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range details {
		fmt.Fprintln(w, d)
	}
	return nil
}

func roleName(r tandemv1.NodeRole) string {
	return enumName(r.String(), "NODE_ROLE_")
}

func voteName(v tandemv1.Vote) string {
	return strings.ReplaceAll(enumName(v.String(), "VOTE_"), "_", "-")
}

func healthName(h tandemv1.Health) string {
	return enumName(h.String(), "HEALTH_")
}

// enumName turns NODE_ROLE_WITNESS into "witness"; UNSPECIFIED becomes "-".
func enumName(s, prefix string) string {
	s = strings.ToLower(strings.TrimPrefix(s, prefix))
	if s == "unspecified" {
		return "-"
	}
	return s
}

func formatRTT(n *tandemv1.NodeInfo) string {
	if n.GetHealth() != tandemv1.Health_HEALTH_ONLINE || n.GetRttUs() <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(n.GetRttUs())/1000)
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// callAdmin dials with the global flags, makes one admin call and prints its
// answer (JSON, or table for humans).
func callAdmin[T proto.Message](a *app, cmd *cobra.Command, timeout time.Duration, do func(context.Context, *adminclient.Client) (T, error), table func(io.Writer, T) error) error {
	return a.withClient(cmd, timeout, func(ctx context.Context, c *adminclient.Client) error {
		resp, err := do(ctx, c)
		if err != nil {
			return err
		}
		return a.print(resp, func(w io.Writer) error { return table(w, resp) })
	})
}

// withClient dials the daemon the global flags point at, hands the
// connection and the command's context to do, and closes it after.
func (a *app) withClient(cmd *cobra.Command, timeout time.Duration, do func(context.Context, *adminclient.Client) error) error {
	c, err := a.dial(cmd, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return do(cmd.Context(), c)
}

// recvAll hands every message of a server stream to each. The stream's end,
// or the user interrupting it, is a normal end.
func recvAll[T any](ctx context.Context, recv func() (T, error), each func(T) error) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := each(m); err != nil {
			return err
		}
	}
}

// streamAdmin dials with the global flags, opens one server stream and
// hands each of its messages to each; it returns the last one (nil if none
// came). Unlike recvAll's callers, it wants the stream's result, so an
// interrupt is an error, not a normal end.
func streamAdmin[M any](a *app, cmd *cobra.Command, timeout time.Duration, open func(context.Context, *adminclient.Client) (grpc.ServerStreamingClient[M], error), each func(*M)) (*M, error) {
	c, err := a.dial(cmd, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := open(cmd.Context(), c)
	if err != nil {
		return nil, err
	}
	var last *M
	// context.Background: only the stream's end (EOF) is a normal end.
	err = recvAll(context.Background(), st.Recv, func(m *M) error {
		last = m
		each(m)
		return nil
	})
	return last, err
}

// formatProtocol is a node's protocol level, "-" when it never reported.
func formatProtocol(p uint32) string {
	if p == 0 {
		return "-"
	}
	return fmt.Sprint(p)
}
