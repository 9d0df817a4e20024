package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/adminclient"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitInterrupted follows the shell: 128 + SIGINT.
	exitInterrupted = 130
)

// app holds the global flag values and output streams of one invocation.
type app struct {
	stdout, stderr io.Writer

	dataDir     string
	server      string
	credentials string
	token       string
	timeout     time.Duration
	output      string
}

// execute runs the CLI and returns the process exit code.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var re *runError
	if errors.As(err, &re) {
		fmt.Fprintf(stderr, "tandem: %s\n", adminclient.Explain(re.err))
		// Interrupted (Ctrl-C, SIGTERM): the shell's convention, 128+SIGINT.
		if ctx.Err() != nil {
			return exitInterrupted
		}
		// The daemon refusing what was asked (a bad name, size or
		// setting) is a usage error too.
		if status.Code(re.err) == codes.InvalidArgument {
			return exitUsage
		}
		return exitError
	}
	fmt.Fprintf(stderr, "tandem: %s\n", err)
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// newRootCmd builds the whole command tree; nothing is kept in globals.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tandem",
		Short: "Administer a Tandem cluster",
		Long: `tandem administers a Tandem cluster through tandemd.

By default it talks to the daemon on this machine through its unix socket
<data-dir>/tandemd.sock (root only), as the node's local admin. With --server it
talks to any node's admin address over mutual TLS, using the certificates in
<data-dir>/admin (ca.crt, admin.crt, admin.key) copied from a cluster node and
an API credential (--token, TANDEM_TOKEN or <credentials>/token; see
'tandem credential').

Conventions shared by every command:
  -o json        the whole answer as JSON, numbers as numbers and states
                 named as in the tables; tables are for people and may
                 change.
  --force        overrides a safety check that would otherwise refuse the
                 command (N+1 admission, a clean shutdown, a node that is
                 still needed); the command says what it overrode.
  --yes          skips an interactive confirmation; without a terminal
                 nothing is asked.
  exit codes     0 done; 1 failed or refused by the cluster; 2 usage or
                 validation error (nothing was changed); 130 interrupted.
  completion     'tandem completion bash|zsh|fish' completes commands,
                 flags and the names of volumes, VMs and nodes.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Unknown commands reach runGroup, which reports them on one line.
		Args: cobra.ArbitraryArgs,
		RunE: runGroup,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			switch a.output {
			case "table", "json":
			default:
				return usageErrorf("--output must be table or json, not %q", a.output)
			}
			if a.timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Flag parse errors are usage errors; they are untagged like all of
	// cobra's own errors, see runError.

	pf := root.PersistentFlags()
	pf.StringVar(&a.dataDir, "data-dir", "", "tandemd data dir on this machine (env "+adminclient.EnvDataDir+", default "+adminclient.DefaultDataDir+")")
	pf.StringVar(&a.server, "server", "", "host:port of a node's admin API; default: the local unix socket")
	pf.StringVar(&a.credentials, "credentials", "", "dir with ca.crt, admin.crt, admin.key, token (env "+adminclient.EnvCredentials+", default <data-dir>/admin)")
	pf.StringVar(&a.token, "token", "", "API credential secret (env "+adminclient.EnvToken+"); remote default: contents of <credentials>/token; on the unix socket none is sent unless given")
	pf.DurationVar(&a.timeout, "timeout", adminclient.DefaultTimeout, "time limit for each call to tandemd")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")

	root.AddCommand(
		newClusterCmd(a),
		newNodeCmd(a),
		newVolumeCmd(a),
		newStorageCmd(a),
		newVMCmd(a),
		newHACmd(a),
		newEventsCmd(a),
		newAuditCmd(a),
		newCredentialCmd(a),
		newImageCmd(a),
		newVersionCmd(a),
		newManCmd(),
	)
	tagRunErrors(root)
	addCompletions(root, a)
	addExamples(root)
	return root
}

// options turns the global flags into client options. longTimeout replaces
// the default timeout for slow calls unless --timeout was given.
func (a *app) options(cmd *cobra.Command, longTimeout time.Duration) adminclient.Options {
	o := adminclient.Options{
		DataDir:     a.dataDir,
		Server:      a.server,
		Credentials: a.credentials,
		Token:       a.token,
		Timeout:     a.timeout,
	}
	if longTimeout > o.Timeout && !cmd.Flags().Changed("timeout") {
		o.Timeout = longTimeout
	}
	return o
}

// dial connects with the global flags; see options for longTimeout.
func (a *app) dial(cmd *cobra.Command, longTimeout time.Duration) (*adminclient.Client, error) {
	return adminclient.Dial(cmd.Context(), a.options(cmd, longTimeout))
}

// usageError is a mistake in the command line (exit 2). An InvalidArgument
// refusal from the daemon exits 2 as well.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// runError marks an error returned by a command's RunE that is not a usage
// error (exit 1). Cobra reports unknown commands, bad flags and bad argument
// counts with plain errors, so "did not come out of RunE" is what makes an
// error a usage error.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

func tagRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var ue *usageError
			if err == nil || errors.As(err, &ue) {
				return err
			}
			return &runError{err: err}
		}
	}
	for _, sub := range c.Commands() {
		tagRunErrors(sub)
	}
}

// argsNamed accepts exactly the named positional arguments.
func argsNamed(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErrorf("%s: missing %s", cmd.CommandPath(), strings.Join(names[len(args):], " "))
		case len(args) > len(names):
			return usageErrorf("%s: unexpected argument %q", cmd.CommandPath(), args[len(names)])
		}
		return nil
	}
}

// newNounCmd is a command that only groups verbs.
func newNounCmd(use, short string, verbs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, RunE: runGroup}
	c.AddCommand(verbs...)
	return c
}

// runGroup runs a command that only groups others: alone it prints help;
// with an unknown verb it is a usage error. Cobra on its own would print help
// and exit 0 for "tandem cluster bogus".
func runGroup(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	cmd.SuggestionsMinimumDistance = 2
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return &usageError{msg: msg}
}
