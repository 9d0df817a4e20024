package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// Hidden first arguments that turn the binary into a helper run inside a
// node's network namespace: a node's metrics endpoint listens on the node's
// own IP, reachable only from its namespace, and the benchmark must add
// nothing to the root namespace to reach it.
const (
	fetchArg = "-fetch" // -fetch URL: print the body
	watchArg = "-watch" // -watch URL [-interval D] [-for D]: print leader samples
)

const maxBody = 8 << 20

// newHTTPClient ignores proxy settings: the endpoints are private addresses
// inside a namespace that no proxy could reach.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 1}}
}

func httpGet(ctx context.Context, c *http.Client, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", url, resp.Status)
	}
	return body, nil
}

// fetchMain implements -fetch URL.
func fetchMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: control -fetch URL")
		return 2
	}
	body, err := httpGet(context.Background(), newHTTPClient(), args[0], 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := os.Stdout.Write(body); err != nil {
		return 1
	}
	return 0
}

// watchMain implements -watch URL: it scrapes the metadata leader gauges
// every interval until -for has passed, printing one line per scrape with
// wall-clock nanoseconds (comparable across processes):
//
//	ok <start_ns> <end_ns> <has_leader> <is_leader> <term>
//	err <start_ns> <end_ns> <message>
func watchMain(args []string) int {
	fs := flag.NewFlagSet("control "+watchArg, flag.ContinueOnError)
	interval := fs.Duration("interval", 10*time.Millisecond, "time between scrapes")
	limit := fs.Duration("for", time.Minute, "stop after this long")
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(os.Stderr, "usage: control -watch URL [-interval D] [-for D]")
		return 2
	}
	url := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	client := newHTTPClient()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		start := time.Now()
		body, err := httpGet(ctx, client, url, time.Second)
		end := time.Now()
		var line string
		if err == nil {
			line, err = leaderLine(body)
		}
		switch {
		case err == nil:
			_, err = fmt.Printf("ok %d %d %s\n", start.UnixNano(), end.UnixNano(), line)
		case ctx.Err() != nil:
			return 0
		default:
			_, err = fmt.Printf("err %d %d %s\n", start.UnixNano(), end.UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		}
		if err != nil { // the parent stopped reading
			return 1
		}
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}

func leaderLine(body []byte) (string, error) {
	samples, err := parseProm(body)
	if err != nil {
		return "", err
	}
	var vals [3]float64
	for i, name := range []string{"tandem_raft_metadata_has_leader", "tandem_raft_metadata_is_leader", "tandem_raft_metadata_term"} {
		v, ok := gauge(samples, name)
		if !ok {
			return "", fmt.Errorf("no %s in metrics", name)
		}
		vals[i] = v
	}
	return fmt.Sprintf("%d %d %d", int(vals[0]), int(vals[1]), uint64(vals[2])), nil
}

func metricsURL(n *testcluster.Node) string {
	return fmt.Sprintf("http://%s:%d/metrics", n.IP, testcluster.MetricsPort)
}

// fetchMetrics scrapes n's metrics endpoint from inside its namespace.
func fetchMetrics(ctx context.Context, c *testcluster.Cluster, self string, n *testcluster.Node) ([]promSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, n, self, fetchArg, metricsURL(n))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", n.Name, err)
	}
	s, err := parseProm(out)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", n.Name, err)
	}
	return s, nil
}

// leaderSample is one scrape by a watcher.
type leaderSample struct {
	start, end time.Time
	ok         bool
	hasLeader  bool
	isLeader   bool
	term       uint64
}

// watcher streams leaderSamples from a -watch helper in a node's namespace.
type watcher struct {
	node   string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	ready  chan struct{} // closed at the first good sample
	done   chan struct{} // closed when the helper's output ends

	mu      sync.Mutex
	samples []leaderSample
}

func startWatcher(ctx context.Context, ip, self string, n *testcluster.Node, interval, limit time.Duration) (*watcher, error) {
	wctx, cancel := context.WithTimeout(ctx, limit+5*time.Second)
	cmd := exec.CommandContext(wctx, ip, "netns", "exec", n.NS, self, watchArg, metricsURL(n),
		"-interval", interval.String(), "-for", limit.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watcher on %s: %w", n.Name, err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("watcher on %s: %w", n.Name, err)
	}
	w := &watcher{node: n.Name, cmd: cmd, cancel: cancel, ready: make(chan struct{}), done: make(chan struct{})}
	go w.read(out)
	return w, nil
}

func (w *watcher) read(r io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(r)
	readyClosed := false
	for sc.Scan() {
		s, ok := parseLeaderSample(sc.Text())
		if !ok {
			continue
		}
		w.mu.Lock()
		w.samples = append(w.samples, s)
		w.mu.Unlock()
		if s.ok && !readyClosed {
			close(w.ready)
			readyClosed = true
		}
	}
}

func parseLeaderSample(line string) (leaderSample, bool) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return leaderSample{}, false
	}
	start, err1 := strconv.ParseInt(f[1], 10, 64)
	end, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return leaderSample{}, false
	}
	s := leaderSample{start: time.Unix(0, start), end: time.Unix(0, end)}
	if f[0] != "ok" || len(f) != 6 {
		return s, true
	}
	term, err := strconv.ParseUint(f[5], 10, 64)
	if err != nil {
		return leaderSample{}, false
	}
	s.ok, s.hasLeader, s.isLeader, s.term = true, f[3] == "1", f[4] == "1", term
	return s, true
}

// waitReady waits for the first good sample and returns it.
func (w *watcher) waitReady(ctx context.Context, timeout time.Duration) (leaderSample, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.ready:
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.samples {
			if s.ok {
				return s, nil
			}
		}
		return leaderSample{}, errors.New("watcher lost its samples") // unreachable
	case <-w.done:
		return leaderSample{}, fmt.Errorf("watcher on %s exited before its first sample", w.node)
	case <-t.C:
		return leaderSample{}, fmt.Errorf("watcher on %s: no sample within %s", w.node, timeout)
	case <-ctx.Done():
		return leaderSample{}, ctx.Err()
	}
}

// firstNewLeader finds the first sample after t0 that shows a leader at a
// term above term, with the last sample before it that did not (which
// brackets the moment the condition became true).
func (w *watcher) firstNewLeader(t0 time.Time, term uint64) (hit, prev leaderSample, found bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.samples {
		if !s.ok {
			continue
		}
		if s.end.After(t0) && s.hasLeader && s.term > term {
			return s, prev, true
		}
		prev = s
	}
	return leaderSample{}, leaderSample{}, false
}

// stop ends the helper and waits for it.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
	_ = w.cmd.Wait() // killed on purpose: its exit status says nothing
}
