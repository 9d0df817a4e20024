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

// credentialRoles are the roles a credential may have, weakest first.
var credentialRoles = []string{"readonly", "operator", "admin"}

func newCredentialCmd(a *app) *cobra.Command {
	cmd := newNounCmd("credential", "Create, list and revoke named API credentials",
		newCredentialCreateCmd(a),
		newCredentialListCmd(a),
		newCredentialRevokeCmd(a),
	)
	cmd.Long = `Named API credentials, each a bearer secret with a role:
  admin     everything;
  operator  VM and volume lifecycle, migration, console, node maintenance
            (no membership, security, fencing or configuration changes);
  readonly  status, list, show, events, audit.
Remote calls (--server) need one (--token, TANDEM_TOKEN or <credentials>/token)
besides the client certificate. Calls on a node's root-only unix socket
without a token act as that node's local admin ("local@NODE" in the audit).
The cluster keeps only a verifier of each secret; a revocation is in force on
every reachable member when 'credential revoke' returns.`
	return cmd
}

func newCredentialCreateCmd(a *app) *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "create NAME --role admin|operator|readonly",
		Short: "Create an API credential and print its secret (shown only once)",
		Example: `  tandem credential create grafana --role readonly
  tandem credential create ci --role operator -o json | jq -r .secret > /root/ci.token`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.Contains(" "+strings.Join(credentialRoles, " ")+" ", " "+role+" ") {
				return usageErrorf("--role must be one of %s, not %q", strings.Join(credentialRoles, ", "), role)
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.CreateCredentialResponse, error) {
				return c.Credential.Create(ctx, &tandemv1.CreateCredentialRequest{Name: args[0], Role: role})
			}, func(w io.Writer, resp *tandemv1.CreateCredentialResponse) error {
				tw := newTabWriter(w)
				fmt.Fprintf(tw, "credential:\t%s\n", resp.GetCredential().GetName())
				fmt.Fprintf(tw, "role:\t%s\n", resp.GetCredential().GetRole())
				fmt.Fprintf(tw, "secret:\t%s\n", resp.GetSecret())
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(a.stderr, "The secret is shown only now; pass it as --token, TANDEM_TOKEN or <credentials>/token.")
				warnUnconfirmed(a, resp.GetUnconfirmed())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, operator or readonly (required)")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", fixedValues(credentialRoles...))
	return cmd
}

func newCredentialListCmd(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List API credentials (never their secrets)",
		Example: `  tandem credential list
  tandem credential list --all   # revoked ones too`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListCredentialsResponse, error) {
				return c.Credential.List(ctx, &tandemv1.ListCredentialsRequest{All: all})
			}, writeCredentials)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include revoked credentials")
	return cmd
}

func writeCredentials(w io.Writer, resp *tandemv1.ListCredentialsResponse) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tBY\tHOLDER\tREVOKED")
	for _, c := range resp.GetCredentials() {
		revoked := "-"
		if c.GetRevokedAt() != nil {
			revoked = formatTime(c.GetRevokedAt()) + " by " + orDash(c.GetRevokedBy())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.GetName(), c.GetRole(), formatTime(c.GetCreatedAt()), orDash(c.GetCreatedBy()), orDash(c.GetHolder()), revoked)
	}
	if len(resp.GetCredentials()) == 0 {
		fmt.Fprintln(tw, "(no credentials; the unix socket on each node still works)")
	}
	return tw.Flush()
}

func newCredentialRevokeCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an API credential on every node",
		Long: `Revoke an API credential. When the command returns, every reachable member
refuses it; members that could not confirm are named. Revoking the last admin
credential needs --force: then only the root-only unix socket on each node
can administer the cluster (and create a new admin credential).`,
		Example: `  tandem credential revoke grafana
  tandem credential revoke bootstrap --force   # the last admin credential`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.RevokeCredentialResponse, error) {
				return c.Credential.Revoke(ctx, &tandemv1.RevokeCredentialRequest{Name: args[0], Force: force})
			}, func(w io.Writer, resp *tandemv1.RevokeCredentialResponse) error {
				fmt.Fprintf(w, "revoked credential %s (role %s)\n", resp.GetCredential().GetName(), resp.GetCredential().GetRole())
				warnUnconfirmed(a, resp.GetUnconfirmed())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "allow revoking the last admin credential")
	return cmd
}

// warnUnconfirmed names the members that did not confirm a change.
func warnUnconfirmed(a *app, nodes []string) {
	for _, n := range nodes {
		fmt.Fprintf(a.stderr, "warning: not confirmed by %s; that node applies the change when it reaches the quorum again\n", n)
	}
}
