package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Create and Join set up Raft and certificates; give them more than the
// default per-call timeout unless --timeout says otherwise.
const setupTimeout = time.Minute

// maxTokenTTL mirrors the daemon's limit so mistakes are caught before dialing.
const maxTokenTTL = 7 * 24 * time.Hour

func newClusterCmd(a *app) *cobra.Command {
	return newNounCmd("cluster", "Create, join and inspect the cluster",
		newClusterCreateCmd(a),
		newClusterJoinCmd(a),
		newClusterRejoinCmd(a),
		newClusterTokenCmd(a),
		newClusterStatusCmd(a),
		newClusterExpectedVotesCmd(a),
		newClusterConfigCmd(a),
		newClusterRotateCACmd(a),
		newClusterUpgradeStatusCmd(a),
	)
}

func newClusterRotateCACmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Replace the cluster CA and re-issue every member's certificates",
		Long: `rotate-ca makes a new cluster CA on this node and takes every member through
three rounds: trust the new CA beside the old one, re-issue the node and admin
certificates from the new CA (each member signs its own new key, which never
leaves it), then trust the new CA alone. VMs and I/O keep running: every round
leaves each pair of members able to connect.

Afterwards the old CA key signs nothing anyone accepts. Use it after removing
a compromised node (any member holds the CA key): 'tandem node remove', then
'tandem cluster rotate-ca'. Join tokens made before the rotation no longer
work, and admin credentials copied off the nodes need the new ca.crt (and a
re-issued admin.crt) from a member's admin directory.

A member that does not answer stops the rotation before anything changes;
--force leaves it out, and it must then rejoin ('tandem cluster rejoin').`,
		Example: `  tandem node remove n4 --force    # a compromised node first
  tandem cluster rotate-ca`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			last, err := streamAdmin(a, cmd, migrateTimeout, func(ctx context.Context, c *adminclient.Client) (grpc.ServerStreamingClient[tandemv1.RotateCAProgress], error) {
				return c.Cluster.RotateCA(ctx, &tandemv1.RotateCARequest{Force: force})
			}, func(p *tandemv1.RotateCAProgress) {
				if p.NewCaFingerprint == "" {
					fmt.Fprintln(a.stderr, p.Step)
				}
			})
			if err != nil {
				return err
			}
			if last == nil || last.NewCaFingerprint == "" {
				return errors.New("CA rotation ended without a result; check 'tandem cluster audit' and run it again")
			}
			return a.print(last, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "cluster CA rotated; new CA fingerprint %s\n", last.NewCaFingerprint)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "rotate although some members do not answer (they must rejoin)")
	return cmd
}

func newClusterCreateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create a new cluster with this node as its first member",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, setupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.CreateClusterResponse, error) {
				return c.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: args[0]})
			}, func(w io.Writer, resp *tandemv1.CreateClusterResponse) error {
				st := resp.GetStatus()
				fmt.Fprintf(w, "created cluster %q (id %s)\n", st.GetClusterName(), orDash(st.GetClusterId()))
				fmt.Fprintf(w, "admin credentials: %s (client certificates and the 'bootstrap' admin credential: copy this directory to administer the cluster from elsewhere; see 'tandem credential')\n\n", orDash(resp.GetCredentialsDir()))
				return writeStatus(w, st)
			})
		},
	}
}

func newClusterJoinCmd(a *app) *cobra.Command {
	var token, tokenFile string
	cmd := &cobra.Command{
		Use:   "join ADDR",
		Short: "Join this node to a cluster through a member's backend address",
		Long: `Join this node to an existing cluster.

ADDR is the backend address (host:port) of any member. The join token comes
from 'tandem cluster token' on a member; pass it with --token, or keep it out
of the process list with --token-file FILE or --token - (read from stdin).

Here --token is the join token, not the admin token: a node that is not in a
cluster yet accepts join without an admin token.`,
		Args: argsNamed("ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := joinToken(cmd.InOrStdin(), token, tokenFile)
			if err != nil {
				return err
			}
			return callAdmin(a, cmd, setupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.JoinClusterResponse, error) {
				return c.Cluster.Join(ctx, &tandemv1.JoinClusterRequest{Address: args[0], Token: tok})
			}, func(w io.Writer, resp *tandemv1.JoinClusterResponse) error {
				fmt.Fprintf(w, "joined cluster %q as node %q (replica %d)\n", resp.GetClusterName(), resp.GetNodeName(), resp.GetReplicaId())
				fmt.Fprintf(w, "admin credentials: %s (client certificates; remote calls also need an API credential: 'tandem credential create')\n", orDash(resp.GetCredentialsDir()))
				return nil
			})
		},
	}
	// Shadows the global --token (admin token) on this command only.
	cmd.Flags().StringVar(&token, "token", "", "join token from 'tandem cluster token' ('-' reads it from stdin)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the join token from FILE ('-' for stdin)")
	return cmd
}

func newClusterRejoinCmd(a *app) *cobra.Command {
	var token, tokenFile, address string
	cmd := &cobra.Command{
		Use:   "rejoin ADDR",
		Short: "Bring back a member whose certificate expired or was left out of a CA rotation",
		Long: `Rejoin runs on a node that belongs to a cluster but cannot work in it: its
node certificate expired while tandemd was not running (so it could not renew
it, and the members refuse it; the node starts stopped and 'tandem cluster
status' on it says so), or the cluster CA was rotated without it (rotate-ca
--force), so it runs but reaches no quorum. A node that reaches a quorum
refuses it: its certificate works.

ADDR is the backend address (host:port) of any member (or give it with
--address). The join token comes from 'tandem cluster token' on a member,
as for a join; pass it with --token, --token-file FILE or --token - (stdin).

The node makes a new key (it never leaves the node) and asks the member to
re-admit it: the member checks the token as for a join, and that the node
is a member that was not removed, signs its new certificate and records it.
The node installs it with the cluster's current CA and starts at once (a
running node uses it from its next connection): it keeps its replica ID, Raft
logs and volume replicas, so its volumes catch up with an incremental resync. A removed node cannot rejoin: wipe its data
directory and join it as a new node.`,
		Example: `  # on a member
  tandem cluster token -o json | jq -r .token > /tmp/token
  # on the node whose certificate expired
  tandem cluster rejoin 10.0.0.1:7400 --token-file /tmp/token`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && address != "" && args[0] != address:
				return usageErrorf("give the member's address either as ADDR or with --address, not both")
			case len(args) == 1:
				address = args[0]
			case address == "":
				return usageErrorf("the backend address of a member is required: tandem cluster rejoin ADDR --token-file FILE")
			}
			tok, err := joinToken(cmd.InOrStdin(), token, tokenFile)
			if err != nil {
				return err
			}
			return callAdmin(a, cmd, setupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.JoinClusterResponse, error) {
				return c.Cluster.Join(ctx, &tandemv1.JoinClusterRequest{Address: address, Token: tok, Rejoin: true})
			}, func(w io.Writer, resp *tandemv1.JoinClusterResponse) error {
				fmt.Fprintf(w, "rejoined cluster %q as node %q (replica %d); its volumes resync the writes they missed ('tandem volume list')\n", resp.GetClusterName(), resp.GetNodeName(), resp.GetReplicaId())
				return nil
			})
		},
	}
	// Shadows the global --token (admin token) on this command only.
	cmd.Flags().StringVar(&token, "token", "", "join token from 'tandem cluster token' ('-' reads it from stdin)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the join token from FILE ('-' for stdin)")
	cmd.Flags().StringVar(&address, "address", "", "backend address (host:port) of a member, instead of ADDR")
	return cmd
}

// joinToken picks the join token from exactly one of --token / --token-file.
func joinToken(stdin io.Reader, token, file string) (string, error) {
	switch {
	case token != "" && file != "":
		return "", usageErrorf("give the join token with either --token or --token-file, not both")
	case token == "" && file == "":
		return "", usageErrorf("a join token is required: --token TOKEN, --token-file FILE or --token - (stdin)")
	}
	var (
		b    []byte
		from string
		err  error
	)
	switch {
	case token == "-" || file == "-":
		from = "stdin"
		b, err = io.ReadAll(io.LimitReader(stdin, 64<<10))
	case file != "":
		from = file
		b, err = os.ReadFile(file)
	default:
		return strings.TrimSpace(token), nil
	}
	if err != nil {
		return "", fmt.Errorf("read join token from %s: %w", from, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("no join token in %s", from)
	}
	return tok, nil
}

func newClusterTokenCmd(a *app) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create a one-time token for joining a node",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case ttl < 0 || (ttl > 0 && ttl < time.Second):
				return usageErrorf("--ttl must be at least 1s (or 0 for the default)")
			case ttl > maxTokenTTL:
				return usageErrorf("--ttl must be at most 168h (7 days)")
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.CreateTokenResponse, error) {
				return c.Cluster.CreateToken(ctx, &tandemv1.CreateTokenRequest{TtlSeconds: uint32(ttl / time.Second)})
			}, func(w io.Writer, resp *tandemv1.CreateTokenResponse) error {
				tw := newTabWriter(w)
				fmt.Fprintf(tw, "token:\t%s\n", resp.GetToken())
				if exp := resp.GetExpiresAt(); exp != nil {
					fmt.Fprintf(tw, "expires:\t%s (in %s)\n", formatTime(exp), time.Until(exp.AsTime()).Round(time.Second))
				}
				fmt.Fprintf(tw, "token id:\t%s\n", orDash(resp.GetTokenId()))
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(a.stderr, "On the new node run: tandem cluster join <backend address of a member> --token-file FILE (or --token -)")
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime, at most 168h (default: the daemon's, 1h)")
	return cmd
}

func newClusterStatusCmd(a *app) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "status [--check]",
		Short: "Show quorum, leader, node health and what needs attention",
		Long: `Show the cluster status as seen by the answering node, with a warnings
section: nodes offline, volumes syncing or degraded, certificates about to
expire, no quorum. Advisories (such as nodes without BMC fencing) are listed
too but are not warnings.

When the cluster is not quorate the answer is that node's local view; the
command still succeeds (exit 0) because the status itself is the answer.
With --check it exits 1 when there is any warning, for monitoring scripts.`,
		Example: `  tandem cluster status
  tandem cluster status --check >/dev/null || echo "cluster needs attention"
  tandem cluster status -o json`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				st, err := c.Cluster.Status(ctx, &tandemv1.StatusRequest{})
				if err != nil {
					return err
				}
				if err := a.print(st, func(w io.Writer) error { return writeStatus(w, st) }); err != nil {
					return err
				}
				if n := len(st.GetWarnings()); check && n > 0 {
					return fmt.Errorf("check failed: %d warning(s): %s", n, strings.Join(st.GetWarnings(), "; "))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "exit 1 when anything is degraded (any warning), for monitoring")
	return cmd
}

func newClusterExpectedVotesCmd(a *app) *cobra.Command {
	var sure bool
	cmd := &cobra.Command{
		Use:   "expected-votes N",
		Short: "Last resort: make this node quorate with N votes (risks split brain)",
		Long: `Tell this node to treat N votes as the whole cluster, when the majority is
gone for good. Only N=1 is supported: this node rewrites the metadata
membership to itself alone (keeping everything it has applied), becomes
quorate, and records the others as removed. The override is audited.

This causes split brain if the dropped nodes are alive (for example on the
other side of a network partition). Use it only when the missing nodes are
powered off or gone for good, and never start them again with their old data:
wipe their data directory and rejoin them with a token. It asks for a typed
"yes" on a terminal; scripts must pass --yes-i-understand-split-brain.`,
		Args: argsNamed("N"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || n == 0 {
				return usageErrorf("expected-votes: N must be a positive whole number, not %q", args[0])
			}
			fmt.Fprint(a.stderr, splitBrainWarning(n))
			if !sure {
				if err := confirm(cmd.Context(), cmd.InOrStdin(), a.stderr); err != nil {
					return err
				}
			}
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				resp, err := c.Cluster.SetExpectedVotes(ctx, &tandemv1.SetExpectedVotesRequest{Votes: uint32(n), Confirm: true})
				if err != nil {
					return err
				}
				if w := resp.GetWarning(); w != "" {
					fmt.Fprintf(a.stderr, "WARNING: %s\n", w)
				}
				return a.print(resp, func(w io.Writer) error {
					if removed := resp.GetRemoved(); len(removed) > 0 {
						fmt.Fprintf(w, "removed from the membership: %s\n\n", strings.Join(removed, ", "))
					} else {
						fmt.Fprintf(w, "no members removed\n\n")
					}
					return writeStatus(w, resp.GetStatus())
				})
			})
		},
	}
	cmd.Flags().BoolVar(&sure, "yes-i-understand-split-brain", false, "skip the typed confirmation (for scripts)")
	return cmd
}

func splitBrainWarning(n uint64) string {
	return fmt.Sprintf(`
************************************************************************
WARNING: SETTING EXPECTED VOTES TO %d IS A LAST-RESORT OVERRIDE
************************************************************************
This node will treat %d vote(s) as the whole cluster: it makes itself the
only member of the metadata group and REMOVES every other node from the
membership. Changes it never applied are lost.

If a removed node is in fact still running (a network partition rather
than a dead machine), both sides may accept changes at the same time:
SPLIT BRAIN. Cluster metadata and VM disks can diverge and be corrupted.

Continue only if every node that is missing is powered off or gone for
good, and keep removed nodes off until they are wiped and joined again.
************************************************************************

`, n, n)
}

// confirm asks for a typed "yes". Without a terminal it refuses rather than
// reading a "yes" that a script piped in by accident.
func confirm(ctx context.Context, in io.Reader, prompt io.Writer) error {
	if !isTerminal(in) {
		return errors.New("refusing to override expected votes: stdin is not a terminal, so the change cannot be confirmed; pass --yes-i-understand-split-brain if you are sure")
	}
	if err := confirmTyped(ctx, in, prompt, `Type "yes" to continue: `, "yes"); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return errors.New("aborted: expected votes not changed")
	}
	return nil
}
