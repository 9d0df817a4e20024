package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/invariant"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Ports every simulated node uses; each node has its own IP.
const (
	BackendPort = 7400
	AdminPort   = 7300
	MetricsPort = 9300
)

// BuildBinaries builds tandemd and tandem into dir from the module that
// contains this package's source tree.
func BuildBinaries(ctx context.Context, dir string) error {
	return BuildBinariesWith(ctx, dir, BuildOptions{})
}

// BuildOptions stamp a build differently from the checkout's, so that a
// test can run a "newer release" of the same source (a rolling upgrade):
// the link-time variables of internal/version, never run-time state.
type BuildOptions struct {
	// Version replaces the `git describe` stamp when set.
	Version string
	// Protocol is the protocol level (highest cluster version) the build
	// supports; 0 keeps the release's version.DefaultProtocol.
	Protocol uint32
}

// BuildBinariesWith is BuildBinaries stamped with o.
func BuildBinariesWith(ctx context.Context, dir string, o BuildOptions) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if root == "." || root == "" {
		return errors.New("cannot find the module root (go env GOMOD is empty)")
	}
	// The same version stamp as the Makefile's build target, so tests see
	// what an operator's binaries report.
	ver := o.Version
	if ver == "" {
		ver = describe(ctx, root)
	}
	ldflags := "-X " + version.Package + ".Version=" + ver
	if o.Protocol != 0 {
		ldflags += fmt.Sprintf(" -X %s.Protocol=%d", version.Package, o.Protocol)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", ldflags, "-o", dir+"/", "./cmd/tandemd", "./cmd/tandem")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, b)
	}
	return nil
}

// describe is `git describe --always --dirty --tags` in root, or
// version.Default when root is not a git checkout or git is missing.
func describe(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty", "--tags")
	cmd.Dir = root
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return version.Default
}

// Tandem runs tandemd on the hosts of a Cluster and drives it with the CLI.
type Tandem struct {
	C   *Cluster
	Bin string // directory holding tandemd and tandem
	// NoMetaReaderCheck starts tandemd without CheckMetaReadersEnv
	// (benchmarks: the check costs a JSON encoding per metadata entry).
	NoMetaReaderCheck bool
}

// CheckMetaReadersEnv makes tandemd verify that no caller mutates the
// shared metadata state it reads (consensus.HostConfig.CheckMetaReaders);
// StartDaemon sets it unless NoMetaReaderCheck, and a violation logs
// invariant.Messages.
const CheckMetaReadersEnv = "TANDEM_CHECK_META_READERS"

// NewTandem wraps c; binDir holds the built binaries.
func NewTandem(c *Cluster, binDir string) *Tandem {
	return &Tandem{C: c, Bin: binDir}
}

// DataDir is the node's tandemd data directory.
func (t *Tandem) DataDir(n *Node) string { return dataDir(n) }

// dataDir is where tandemd keeps n's data; StartLibvirtd points libvirtd
// at the TLS files tandemd writes there.
func dataDir(n *Node) string { return filepath.Join(n.Dir, "data") }

// BackendAddr is the node's backend (peer gRPC) address.
func (t *Tandem) BackendAddr(n *Node) string { return fmt.Sprintf("%s:%d", n.IP, BackendPort) }

// AdminAddr is the node's TCP admin API address.
func (t *Tandem) AdminAddr(n *Node) string { return fmt.Sprintf("%s:%d", n.IP, AdminPort) }

// Credentials is the admin credentials directory the node writes.
func (t *Tandem) Credentials(n *Node) string { return filepath.Join(t.DataDir(n), "admin") }

// StartDaemon starts tandemd on n and waits until its admin socket answers.
func (t *Tandem) StartDaemon(ctx context.Context, n *Node, extra ...string) (*Proc, error) {
	argv := append([]string{filepath.Join(t.Bin, "tandemd"),
		"--node-name", n.Name,
		"--data-dir", t.DataDir(n),
		"--backend-addr", t.BackendAddr(n),
		"--admin-addr", t.AdminAddr(n),
		"--metrics-addr", fmt.Sprintf("%s:%d", n.IP, MetricsPort),
	}, extra...)
	var env []string
	if !t.NoMetaReaderCheck {
		env = append(env, CheckMetaReadersEnv+"=1")
	}
	p, err := t.C.Start(n, "tandemd", argv, env)
	if err != nil {
		return nil, err
	}
	if !t.NoMetaReaderCheck {
		for _, m := range invariant.Messages() {
			t.C.checkLogAtClose(n, "tandemd", m)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, _, err := t.CLI(ctx, n, "cluster", "status", "--output", "json"); err == nil {
			return p, nil
		}
		if !p.Alive() {
			return nil, fmt.Errorf("tandemd on %s exited during startup:\n%s", n.Name, t.C.LogTail(n, "tandemd", 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("tandemd on %s did not answer within 15s:\n%s", n.Name, t.C.LogTail(n, "tandemd", 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CLIError is a failed CLI run with its output.
type CLIError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CLIError) Error() string {
	return fmt.Sprintf("tandem %s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *CLIError) Unwrap() error { return e.Err }

// CLI runs the tandem CLI inside n's namespace against n's data dir and
// returns stdout and stderr.
func (t *Tandem) CLI(ctx context.Context, n *Node, args ...string) (stdout, stderr string, err error) {
	full := append([]string{"--data-dir", t.DataDir(n)}, args...)
	return t.RawCLI(ctx, n, full...)
}

// RawCLI runs the tandem CLI in n's namespace with exactly these arguments.
func (t *Tandem) RawCLI(ctx context.Context, n *Node, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", n.NS, filepath.Join(t.Bin, "tandem")}, args...)
	cmd := exec.CommandContext(ctx, t.C.ip, argv...)
	cmd.Env = append(os.Environ(), "TANDEM_TOKEN=", "TANDEM_CREDENTIALS=", "TANDEM_DATA_DIR=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), &CLIError{Args: args, Stderr: e.String(), Err: err}
	}
	return o.String(), e.String(), nil
}

// Status asks n for the cluster status through the CLI's JSON output.
func (t *Tandem) Status(ctx context.Context, n *Node) (*tandemv1.ClusterStatus, error) {
	out, _, err := t.CLI(ctx, n, "cluster", "status", "--output", "json")
	if err != nil {
		return nil, err
	}
	var st tandemv1.ClusterStatus
	if err := adminclient.UnmarshalJSON([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status json from %s: %w\n%s", n.Name, err, out)
	}
	return &st, nil
}

// Token creates a one-time join token on n.
func (t *Tandem) Token(ctx context.Context, n *Node) (string, error) {
	out, _, err := t.CLI(ctx, n, "cluster", "token", "--output", "json")
	if err != nil {
		return "", err
	}
	var r tandemv1.CreateTokenResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &r); err != nil {
		return "", fmt.Errorf("token json: %w\n%s", err, out)
	}
	return r.Token, nil
}

// Form creates cluster name on the first of nodes (default: all hosts) and
// joins the others through the CLI, each with its own one-time token.
func (t *Tandem) Form(ctx context.Context, name string, nodes ...*Node) error {
	if len(nodes) == 0 {
		nodes = t.C.Nodes
	}
	first := nodes[0]
	if _, _, err := t.CLI(ctx, first, "cluster", "create", name); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		tok, err := t.Token(ctx, first)
		if err != nil {
			return err
		}
		if _, _, err := t.CLI(ctx, n, "cluster", "join", t.BackendAddr(first), "--token", tok); err != nil {
			return err
		}
	}
	return nil
}

// WaitStatus polls n's status until ok accepts it or the timeout passes.
func (t *Tandem) WaitStatus(ctx context.Context, n *Node, timeout time.Duration, ok func(*tandemv1.ClusterStatus) bool) (*tandemv1.ClusterStatus, error) {
	deadline := time.Now().Add(timeout)
	var last *tandemv1.ClusterStatus
	var lastErr error
	for {
		st, err := t.Status(ctx, n)
		if err == nil && ok(st) {
			return st, nil
		}
		last, lastErr = st, err
		if time.Now().After(deadline) || ctx.Err() != nil {
			if lastErr != nil {
				return last, fmt.Errorf("waiting for status on %s: %w", n.Name, lastErr)
			}
			return last, fmt.Errorf("waiting for status on %s: condition not met within %s (last: quorate=%v leader=%q online=%d/%d)", n.Name, timeout, last.GetQuorate(), last.GetLeader(), last.GetVotesOnline(), last.GetVoters())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartComputeDaemon starts tandemd on n wired to lv, n's own libvirtd, with
// VM NICs on the cluster's VM bridge. capacityMiB, when non-zero, is the
// memory the node offers VMs (placement and N+1 work on it).
func (t *Tandem) StartComputeDaemon(ctx context.Context, n *Node, lv *Libvirtd, capacityMiB uint64, extra ...string) (*Proc, error) {
	args := []string{"--libvirt-socket", lv.Socket, "--migration-uri", lv.URI, "--vm-bridge", t.C.VMBridge}
	if lv.InsecureTCP {
		args = append(args, "--libvirt-insecure-tcp", "true")
	}
	if lv.StreamTLS {
		args = append(args, "--migration-stream-tls", "true")
	}
	if capacityMiB > 0 {
		args = append(args, "--vm-memory-mib", fmt.Sprint(capacityMiB))
	}
	return t.StartDaemon(ctx, n, append(args, extra...)...)
}
