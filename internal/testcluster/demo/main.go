// Command demo starts a local 3-node Tandem cluster, each node in its own
// network namespace, forms it with the CLI and prints its status. It is what
// `make demo` runs. On a terminal it keeps the cluster up until Enter or
// Ctrl-C so it can be explored; otherwise it tears it down at once.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func main() {
	bin := flag.String("bin", "", "directory with tandemd and tandem (built when empty)")
	nodes := flag.Int("nodes", 3, "number of simulated hosts")
	keep := flag.Bool("keep", false, "keep the cluster running until Enter or Ctrl-C even without a terminal")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*bin, *nodes, *keep, log, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func run(bin string, nodes int, keep bool, log *slog.Logger, out io.Writer) error {
	if err := testcluster.Available(); err != nil {
		return fmt.Errorf("the demo simulates hosts with network namespaces and needs root: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	base, err := os.MkdirTemp("", "tandem-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if bin == "" {
		bin = filepath.Join(base, "bin")
		log.Info("building tandemd and tandem")
		if err := testcluster.BuildBinaries(ctx, bin); err != nil {
			return err
		}
	}
	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: base}, testcluster.LogReporter(log))
	if err != nil {
		return err
	}
	defer c.Close()
	td := testcluster.NewTandem(c, bin)

	fmt.Fprintf(out, "== starting tandemd on %d simulated hosts (network namespaces)\n", nodes)
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			return err
		}
		fmt.Fprintf(out, "   %s  ns=%s  backend=%s  admin=%s\n", n.Name, n.NS, td.BackendAddr(n), td.AdminAddr(n))
	}
	fmt.Fprintln(out, "== tandem cluster create demo; tandem cluster token; tandem cluster join ... (per node)")
	start := time.Now()
	if err := td.Form(ctx, "demo"); err != nil {
		return err
	}
	last := c.Nodes[len(c.Nodes)-1]
	if _, err := td.WaitStatus(ctx, last, 15*time.Second, func(s *tandemv1.ClusterStatus) bool {
		return int(s.GetVotesOnline()) == nodes
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "   cluster formed in %s\n\n", time.Since(start).Round(time.Millisecond))
	status, _, err := td.CLI(ctx, last, "cluster", "status")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== tandem cluster status (asked on %s)\n%s\n", last.Name, status)

	first := c.Nodes[0]
	fmt.Fprintln(out, "== tandem volume create demo-vol --size 256M --replicas 2")
	vol, _, err := td.CLI(ctx, first, "volume", "create", "demo-vol", "--size", "256M", "--replicas", "2")
	if err != nil {
		return err
	}
	fmt.Fprintln(out, vol)
	showOut, _, err := td.CLI(ctx, first, "volume", "show", "demo-vol", "--output", "json")
	if err != nil {
		return err
	}
	var info tandemv1.VolumeInfo
	if err := protojson.Unmarshal([]byte(showOut), &info); err != nil {
		return fmt.Errorf("volume show: %w", err)
	}
	primary := c.Node(info.Primary)
	if primary == nil {
		return fmt.Errorf("volume primary %q unknown", info.Primary)
	}
	uri := fmt.Sprintf("nbd+unix:///demo-vol?socket=%s", filepath.Join(td.DataDir(primary), "nbd.sock"))
	fmt.Fprintf(out, "== writing 16 MiB through the primary's NBD export (qemu-io %s)\n", uri)
	qio := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 16M", "-c", "flush", "-c", "read -P 0x5a 0 16M", uri)
	b, err := qio.CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-io: %w\n%s", err, b)
	}
	fmt.Fprintf(out, "%s\n", b)
	verify, _, err := td.CLI(ctx, first, "volume", "verify", "demo-vol")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== tandem volume verify demo-vol (compares every block of every replica)\n%s\n", verify)

	if !keep && !isTerminal(os.Stdin) {
		fmt.Fprintln(out, "== done; tearing the demo cluster down (run 'make demo' on a terminal to explore it)")
		return nil
	}
	fmt.Fprintf(out, "== the cluster keeps running; try, from another shell:\n")
	n1 := c.Nodes[0]
	fmt.Fprintf(out, "   %s/tandem --data-dir %s cluster status\n", bin, td.DataDir(n1))
	fmt.Fprintf(out, "   %s/tandem --data-dir %s node list --output json\n", bin, td.DataDir(last))
	fmt.Fprintf(out, "   ip netns exec %s %s/tandem --server %s --credentials %s cluster status\n", n1.NS, bin, td.AdminAddr(n1), td.Credentials(n1))
	fmt.Fprintf(out, "   kill -9 a node's tandemd (ip netns pids %s) and watch the leader move\n", n1.NS)
	fmt.Fprintf(out, "   %s/tandem --data-dir %s volume show demo-vol\n", bin, td.DataDir(n1))
	fmt.Fprintf(out, "   qemu-io -f raw -c 'read -v 0 512' '%s'\n", uri)
	fmt.Fprintln(out, "press Enter or Ctrl-C to stop and clean up")
	lines := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(lines)
	}()
	select {
	case <-ctx.Done():
	case <-lines:
	}
	fmt.Fprintln(out, "== stopping")
	return nil
}
