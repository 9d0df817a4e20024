package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Binaries is the absolute directory holding tandemd and tandem: bin, or
// when bin is empty tmp/bin after building them there.
func Binaries(ctx context.Context, log *slog.Logger, bin, tmp string) (string, error) {
	if bin == "" {
		bin = filepath.Join(tmp, "bin")
		log.Info("building tandemd and tandem", "dir", bin)
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := testcluster.BuildBinaries(bctx, bin)
		cancel()
		if err != nil {
			return "", fmt.Errorf("build: %w", err)
		}
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", fmt.Errorf("bin dir: %w", err)
	}
	for _, name := range []string{"tandemd", "tandem"} {
		if _, err := os.Stat(filepath.Join(abs, name)); err != nil {
			return "", fmt.Errorf("%s not found in %s (run 'make build' or leave -bin empty): %w", name, abs, err)
		}
	}
	return abs, nil
}

// TempBinaries makes the run's temporary directory
// ($TMPDIR/tandem-bench-<name>-*) and finds or builds the binaries there
// (Binaries). The caller removes tmp once every process is gone; on an
// error it is already removed.
func TempBinaries(ctx context.Context, log *slog.Logger, name, bin string) (tmp, abs string, err error) {
	tmp, err = os.MkdirTemp("", "tandem-bench-"+name+"-")
	if err != nil {
		return "", "", fmt.Errorf("temp dir: %w", err)
	}
	if abs, err = Binaries(ctx, log, bin, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", "", err
	}
	return tmp, abs, nil
}

// Healthy is a status with all of nodes voters online and quorate with a
// leader.
func Healthy(st *tandemv1.ClusterStatus, nodes int) bool {
	return st.Quorate && st.Leader != "" && st.Voters == uint32(nodes) && st.VotesOnline == st.Voters
}

// CheckNamespaces logs every network namespace of this process still there
// after the cluster's Close: a leak would disturb the next run.
func CheckNamespaces(log *slog.Logger) {
	prefix := fmt.Sprintf("tdmt%d-", os.Getpid())
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				log.Error("namespace left behind after Close", "name", e.Name())
			}
		}
	}
}

// CopyLogs keeps every node's tandemd log as dir/<node>-tandemd.log, and
// the files of extra (name in dir → path): they go away with the temporary
// directory.
func CopyLogs(c *testcluster.Cluster, extra map[string]string, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("logs dir: %w", err)
	}
	files := maps.Clone(extra)
	if files == nil {
		files = map[string]string{}
	}
	for _, n := range c.Nodes {
		files[n.Name+"-tandemd.log"] = filepath.Join(n.Dir, "tandemd.log")
	}
	var errs []error
	for _, name := range SortedKeys(files) {
		data, err := os.ReadFile(files[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("log %s: %w", name, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			errs = append(errs, fmt.Errorf("copy log %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// StartCluster starts tandemd on every node of c with args added to its
// command line, forms the cluster name and waits until every node reports
// it healthy. It returns each node's daemon and when it was started (a
// fresh node fails over differently: control reports the survivors' age).
func StartCluster(ctx context.Context, log *slog.Logger, td *testcluster.Tandem, c *testcluster.Cluster, name string, args ...string) (map[string]*testcluster.Proc, map[string]time.Time, error) {
	return StartClusterWith(ctx, log, td, c, name, func(ctx context.Context, n *testcluster.Node) (*testcluster.Proc, error) {
		return td.StartDaemon(ctx, n, args...)
	})
}

// StartClusterWith is StartCluster with each node's tandemd started by
// start (for example wired to a libvirtd started first).
func StartClusterWith(ctx context.Context, log *slog.Logger, td *testcluster.Tandem, c *testcluster.Cluster, name string, start func(context.Context, *testcluster.Node) (*testcluster.Proc, error)) (map[string]*testcluster.Proc, map[string]time.Time, error) {
	procs, started := map[string]*testcluster.Proc{}, map[string]time.Time{}
	for _, n := range c.Nodes {
		started[n.Name] = time.Now()
		p, err := start(ctx, n)
		if err != nil {
			return procs, started, fmt.Errorf("start tandemd on %s: %w", n.Name, err)
		}
		procs[n.Name] = p
	}
	log.Info("forming cluster", "name", name)
	if err := td.Form(ctx, name); err != nil {
		return procs, started, fmt.Errorf("form cluster: %w", err)
	}
	healthy := func(st *tandemv1.ClusterStatus) bool { return Healthy(st, len(c.Nodes)) }
	for _, n := range c.Nodes {
		if _, err := td.WaitStatus(ctx, n, 30*time.Second, healthy); err != nil {
			return procs, started, fmt.Errorf("cluster did not become healthy: %w", err)
		}
	}
	return procs, started, nil
}
