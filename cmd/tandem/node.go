package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newNodeCmd(a *app) *cobra.Command {
	return newNounCmd("node", "List, show and remove nodes; maintenance and fencing",
		newNodeListCmd(a),
		newNodeShowCmd(a),
		newNodeRemoveCmd(a),
		newNodeMaintenanceCmd(a),
		newNodeFenceConfigCmd(a),
		newNodeFenceCmd(a),
		newNodeNoteCmd(a),
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
			last, err := streamAdmin(a, cmd, migrateTimeout, func(ctx context.Context, c *adminclient.Client) (grpc.ServerStreamingClient[tandemv1.NodeMaintenanceProgress], error) {
				return c.Node.Maintenance(ctx, &tandemv1.NodeMaintenanceRequest{Name: args[1], Enable: enable, Failback: failback, Force: force})
			}, func(p *tandemv1.NodeMaintenanceProgress) {
				if p.Node == nil {
					fmt.Fprintln(a.stderr, p.Message)
				}
			})
			if err != nil {
				return err
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
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List the cluster's nodes",
		Example: `  tandem node list
  tandem node list --filter health=offline
  tandem node list --columns name --no-headers`,
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListNodesResponse, error) {
		return c.Node.List(ctx, &tandemv1.ListNodesRequest{})
	}, func(w io.Writer, resp *tandemv1.ListNodesResponse, lf *listFlags) error {
		if !resp.GetQuorate() {
			fmt.Fprintln(a.stderr, "NOT QUORATE: this list is the answering node's local view")
		}
		return writeNodeList(w, resp.GetNodes(), lf)
	})
}

func newNodeRemoveCmd(a *app) *cobra.Command {
	var force, yes bool
	cmd := &cobra.Command{
		Use:   "remove NAME [--force] [--yes]",
		Short: "Remove a node from the cluster membership",
		Long: `Remove a node from the cluster membership, for good: it cannot come back
with its data and must be wiped and joined again.

tandemd refuses the removal, listing what would be lost or stranded, when
the node still answers (stop tandemd on it first), when a VM is placed on
it, when it is the primary of a volume, or when it holds the only UpToDate
replica of a volume (or no replica of that volume answers to show
otherwise). Nothing is changed then.

--force overrides exactly those safety checks and nothing else (not the
quorum, not removing the node you ask, not the last voter): the removal goes
ahead and the command prints, as warnings, each check it overrode.

The removal revokes the node's certificates at once and cuts its open
connections. Once it has committed, the removed node is told (when it
answers): it freezes its volumes and destroys its VMs for good, its data
staying on disk, and its 'tandem cluster status' says who removed it and
when. A node that is down learns when it next contacts a member.

On a terminal the command first asks you to type the node's name; --yes
skips that. Without a terminal (scripts) it does not ask.`,
		Example: `  tandem node remove node3                 # refused while node3 runs or holds the only good copy of a volume
  tandem node remove node3 --yes           # no typed confirmation
  tandem node remove node3 --force --yes   # node3 is gone for good: override the checks, print what was overridden`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes && isTerminal(cmd.InOrStdin()) {
				q := fmt.Sprintf("Remove node %s from the cluster? It can only come back wiped and joined again.\nType the node name (%s) to continue: ", name, name)
				if err := confirmTyped(cmd.Context(), cmd.InOrStdin(), a.stderr, q, name); err != nil {
					return fmt.Errorf("node %s not removed: %w", name, err)
				}
			}
			// The daemon pings the node and asks every replica of its
			// volumes: more than the default time limit when it is down.
			return a.withClient(cmd, 30*time.Second, func(ctx context.Context, c *adminclient.Client) error {
				resp, err := c.Node.Remove(ctx, &tandemv1.RemoveNodeRequest{Name: name, Force: force})
				if err != nil {
					return err
				}
				for _, o := range resp.GetOverridden() {
					fmt.Fprintf(a.stderr, "warning: --force overrode: %s\n", o)
				}
				return a.print(resp, func(w io.Writer) error {
					n := resp.GetNode()
					if n == nil {
						fmt.Fprintf(w, "removed node %q\n", name)
						return nil
					}
					fmt.Fprintf(w, "removed node %q (replica %d, state %s)\n", n.GetName(), n.GetReplicaId(), orDash(n.GetState()))
					if notice := resp.GetNotice(); notice != "" {
						fmt.Fprintln(w, notice)
					}
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "override the safety checks that would refuse the removal; the command says what it overrode")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for the typed confirmation on a terminal")
	return cmd
}

// confirmTyped prints question and waits for want typed on one line; any
// other answer, end of input or Ctrl-C (ctx) aborts.
func confirmTyped(ctx context.Context, in io.Reader, prompt io.Writer, question, want string) error {
	fmt.Fprint(prompt, question)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(in).ReadString('\n')
		line <- s
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(prompt)
		return fmt.Errorf("aborted: %w", ctx.Err())
	case s := <-line:
		if got := strings.TrimSpace(s); got != want {
			return fmt.Errorf("aborted: typed %q, not %q", got, want)
		}
		return nil
	}
}
