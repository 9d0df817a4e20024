package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func newHACmd(a *app) *cobra.Command {
	return newNounCmd("ha", "High availability: failure detection and automatic recovery",
		newHAStatusCmd(a),
		newHAArmCmd(a, true),
		newHAArmCmd(a, false),
	)
}

func writeHAStatus(w io.Writer, r *tandemv1.HAStatusResponse) error {
	armed := "ARMED"
	if !r.Armed {
		armed = "DISARMED (no automatic recovery)"
	}
	fmt.Fprintf(w, "HA: %s, detector on %s\n", armed, dash(r.Leader))
	if t := r.Timing; t != nil {
		fmt.Fprintf(w, "Timing: heartbeat %dms, suspect %dms, dead %dms, self-fence lease %dms, fence timeout %dms\n",
			t.HeartbeatIntervalMs, t.SuspectTimeoutMs, t.DeadTimeoutMs, t.SelfFenceLeaseMs, t.FenceTimeoutMs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tLIVENESS\tLAST SEEN\tFENCING")
	for _, n := range r.Nodes {
		seen := "-"
		if n.LastSeen != nil && n.LastSeen.AsTime().Unix() > 0 {
			seen = time.Since(n.LastSeen.AsTime()).Round(time.Millisecond).String() + " ago"
		}
		fence := "lease only"
		if n.FencingConfigured {
			fence = "agent configured"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Liveness, seen, fence)
	}
	if len(r.Vms) > 0 {
		fmt.Fprintln(tw, "\nVM\tNODE\tDESIRED\tHA STATE\tSINCE\tREASON")
		for _, v := range r.Vms {
			since := "-"
			if v.Changed != nil && v.Changed.AsTime().Unix() > 0 {
				since = v.Changed.AsTime().Local().Format(time.TimeOnly)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, dash(v.Node), dash(v.Desired), dash(v.HaState), since, dash(v.Reason))
		}
	}
	return tw.Flush()
}

func newHAStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show node liveness and each VM's HA state",
		Long: `Show HA: whether automatic recovery is armed, the timing in force, each
node's liveness as the metadata leader sees it, and for each VM its desired
state and HA state (started, stopped, disabled, fence, recovery or error).
Times never recorded print as "-" (and are absent from JSON).`,
		Example: `  tandem ha status
  tandem ha status -o json`,
		Args: argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.HAStatusResponse, error) {
				return c.HA.Status(ctx, &tandemv1.HAStatusRequest{})
			}, writeHAStatus)
		},
	}
}

func newHAArmCmd(a *app, arm bool) *cobra.Command {
	use, short := "arm", "Resume automatic recovery cluster-wide"
	if !arm {
		use, short = "disarm", "Stop automatic recovery cluster-wide (for maintenance); detection goes on"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.HAStatusResponse, error) {
				return c.HA.Arm(ctx, &tandemv1.HAArmRequest{Armed: arm})
			}, writeHAStatus)
		},
	}
}

func newEventsCmd(a *app) *cobra.Command {
	var follow bool
	var tail uint32
	var since uint64
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the cluster's events (node suspected/dead, fencing, promotions, recoveries)",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				st, err := c.HA.Events(ctx, &tandemv1.EventsRequest{Follow: follow, Tail: tail, Since: since})
				if err != nil {
					return err
				}
				table := a.output != "json"
				if table {
					fmt.Fprintf(a.stdout, "%-25s %-5s %-20s %-14s %s\n", "TIME", "SEQ", "KIND", "SUBJECT", "DETAIL (BY)")
				}
				n := 0
				if follow && table {
					fmt.Fprintln(a.stderr, "following new events; Ctrl-C to stop")
				}
				err = recvAll(ctx, st.Recv, func(e *tandemv1.Event) error {
					n++
					if !table {
						return writeJSON(a.stdout, e)
					}
					subject := e.Node
					if e.Vm != "" {
						subject = strings.TrimPrefix(subject+" vm "+e.Vm, " ")
					}
					_, err := fmt.Fprintf(a.stdout, "%-25s %-5d %-20s %-14s %s (by %s)\n", formatTime(e.At), e.Seq, e.Kind, orDash(subject), e.Detail, e.By)
					return err
				})
				if err == nil && n == 0 && table && !follow {
					fmt.Fprintln(a.stdout, "(no events)")
				}
				return err
			})
		},
		Example: `  tandem events                 # the last 20
  tandem events --tail 200
  tandem events -f              # follow, like tail -f
  tandem events --since 1234 -o json`,
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new events")
	cmd.Flags().Uint32Var(&tail, "tail", 20, "events to show from the past")
	cmd.Flags().Uint64Var(&since, "since", 0, "show events after this sequence number")
	return cmd
}

// passwordSource reads the password a flag names: a file, or "-" for
// standard input (typed without echo at a terminal). Passwords are never
// taken from the command line itself, where ps and shell history show
// them.
type passwordSource struct {
	stdin  io.Reader
	prompt io.Writer
	// usedStdin is the flag that already read standard input.
	usedStdin string
}

// read returns the password for flag from path.
func (p *passwordSource) read(flag, path string) (string, error) {
	if path != "-" {
		return readPasswordFile(flag, path)
	}
	if p.usedStdin != "" {
		return "", fmt.Errorf("%s: %s already reads its password from stdin; use a password file for one of them", flag, p.usedStdin)
	}
	p.usedStdin = flag
	var b []byte
	var err error
	if f, ok := p.stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprintf(p.prompt, "%s password: ", flag)
		b, err = term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(p.prompt)
	} else {
		b, err = io.ReadAll(io.LimitReader(p.stdin, 64<<10))
	}
	if err != nil {
		return "", fmt.Errorf("%s: read password from stdin: %w", flag, err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s: no password on stdin", flag)
	}
	return pw, nil
}

// parseIPMIFlag reads host[:port],user,password-file.
func parseIPMIFlag(s string, pws *passwordSource) (*tandemv1.IPMIConfig, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, fmt.Errorf("--ipmi %q: want host[:port],user,password-file", s)
	}
	cfg := &tandemv1.IPMIConfig{Host: parts[0], User: parts[1]}
	if h, p, ok := strings.Cut(parts[0], ":"); ok {
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("--ipmi %q: bad port %q", s, p)
		}
		cfg.Host, cfg.Port = h, uint32(port)
	}
	pw, err := pws.read("--ipmi", parts[2])
	if err != nil {
		return nil, err
	}
	cfg.Password = pw
	return cfg, nil
}

// parseRedfishFlag reads https://endpoint,user,password-file[,system-id].
func parseRedfishFlag(s string, pws *passwordSource) (*tandemv1.RedfishConfig, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 3 || len(parts) > 4 {
		return nil, fmt.Errorf("--redfish %q: want https://host[:port],user,password-file[,system-id]", s)
	}
	cfg := &tandemv1.RedfishConfig{Endpoint: parts[0], User: parts[1]}
	if len(parts) == 4 {
		cfg.SystemId = parts[3]
	}
	pw, err := pws.read("--redfish", parts[2])
	if err != nil {
		return nil, err
	}
	cfg.Password = pw
	return cfg, nil
}

func newNodeFenceConfigCmd(a *app) *cobra.Command {
	var ipmi, redfish string
	var noLease, insecure bool
	cmd := &cobra.Command{
		Use:   "fence-config NODE [--ipmi host[:port],user,password-file] [--redfish URL,user,password-file] [--no-lease]",
		Short: "Set how a node is fenced (BMC passwords are read from a file or stdin, never shown)",
		Long: `Set how NODE is fenced: its BMC (IPMI or Redfish) and whether its
self-fence lease counts. The password is read from the file named in the
flag, or from stdin when the file is "-" (typed without echo at a
terminal), so it never appears on the command line, in ps or in the shell
history. The node taking the call seals the password with the cluster
secret before it is stored: the Raft log and snapshots never hold it in
plain text, and answers only say "password set (sealed)".`,
		Example: `  tandem node fence-config node1 --ipmi 10.0.9.1:623,admin,/root/bmc1.pass
  tandem node fence-config node1 --ipmi 10.0.9.1,admin,-          # prompts for the password
  tandem node fence-config node2 --redfish https://10.0.9.2,root,/root/bmc2.pass --redfish-insecure`,
		Args: argsNamed("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tandemv1.FenceConfigRequest{Name: args[0], NoLease: noLease}
			pws := &passwordSource{stdin: cmd.InOrStdin(), prompt: a.stderr}
			if ipmi != "" {
				cfg, err := parseIPMIFlag(ipmi, pws)
				if err != nil {
					return usageErrorf("%v", err)
				}
				req.Ipmi = cfg
			}
			if redfish != "" {
				cfg, err := parseRedfishFlag(redfish, pws)
				if err != nil {
					return usageErrorf("%v", err)
				}
				cfg.Insecure = insecure
				req.Redfish = cfg
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.FenceConfigResponse, error) {
				return c.Node.FenceConfig(ctx, req)
			}, func(w io.Writer, resp *tandemv1.FenceConfigResponse) error {
				agents := strings.Join(resp.Agents, "; ")
				if agents == "" {
					agents = "no agent"
				}
				lease := "its self-fence lease counts"
				if !resp.Lease {
					lease = "its self-fence lease does not count"
				}
				_, err := fmt.Fprintf(w, "node %s: %s; %s\n", resp.Name, agents, lease)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&ipmi, "ipmi", "", "IPMI BMC: host[:port],user,password-file (- reads stdin)")
	cmd.Flags().StringVar(&redfish, "redfish", "", "Redfish service: https://host[:port],user,password-file[,system-id] (- reads stdin)")
	cmd.Flags().BoolVar(&insecure, "redfish-insecure", false, "do not verify the Redfish service's TLS certificate")
	cmd.Flags().BoolVar(&noLease, "no-lease", false, "do not accept the node's self-fence lease as fencing (no watchdog there)")
	return cmd
}

func newNodeFenceCmd(a *app) *cobra.Command {
	var confirmOff bool
	cmd := &cobra.Command{
		Use:   "fence NODE [--confirm-off]",
		Short: "Power a node off with its agents, or confirm it is off",
		Long: `Without flags, fence NODE with its configured agents now. With --confirm-off,
record that you made sure the node is powered off (pulled the plug, checked
the BMC by hand): a recovery waiting for fencing then proceeds. Confirming a
node that still runs can start its VMs twice; the storage epoch still refuses
its writes.`,
		Args: argsNamed("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.FenceNodeResponse, error) {
				return c.Node.Fence(ctx, &tandemv1.FenceNodeRequest{Name: args[0], ConfirmOff: confirmOff})
			}, func(w io.Writer, resp *tandemv1.FenceNodeResponse) error {
				_, err := fmt.Fprintf(w, "node %s fenced (%s): %s\n", args[0], resp.Agent, resp.Detail)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&confirmOff, "confirm-off", false, "record that the node is off (you checked)")
	return cmd
}

// readPasswordFile reads a fencing agent's password file (the flag names it in
// errors): the first line without its line end, which must not be empty.
func readPasswordFile(flag, path string) (string, error) {
	pw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: password file: %w", flag, err)
	}
	password := strings.TrimRight(string(pw), "\r\n")
	if password == "" {
		return "", fmt.Errorf("%s: password file %s is empty", flag, path)
	}
	return password, nil
}
