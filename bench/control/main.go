package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	clusterName = "bench"
	configKey   = "bench.seq"
	nodes       = 3
	// failoverTimeout bounds one round's wait for a new leader; far above
	// the goal so that slow failovers are measured rather than cut off.
	failoverTimeout = 30 * time.Second
	// backOnlineTimeout bounds the wait for a restarted node to rejoin.
	backOnlineTimeout = 60 * time.Second
	maxErrorSamples   = 5
	// blockSize groups consecutive propose calls to show drift over a run.
	blockSize = 100
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case fetchArg:
			os.Exit(fetchMain(os.Args[2:]))
		case watchArg:
			os.Exit(watchMain(os.Args[2:]))
		}
	}
	os.Exit(benchkit.Main("control", os.Args[1:], parseFlags, execute))
}

type config struct {
	benchkit.Common
	logs          string
	proposals     int
	warmup        int
	kills         int
	settle        time.Duration
	idle          time.Duration
	pollTimeout   time.Duration
	pollEvery     time.Duration
	watchInterval time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("control", flag.ContinueOnError)
	c.Flags(fs, "control", 15*time.Minute, false)
	fs.StringVar(&c.logs, "logs", "", "if set, copy every node's tandemd log into this directory at the end")
	fs.IntVar(&c.proposals, "proposals", 1000, "measured SetConfig calls per path (leader, follower)")
	fs.IntVar(&c.warmup, "warmup", 20, "unmeasured SetConfig calls before each path")
	fs.IntVar(&c.kills, "kills", 20, "leader kills")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after a restarted node is back before the next kill")
	fs.DurationVar(&c.idle, "idle", 10*time.Second, "idle time before reading memory")
	// Status on a survivor probes every member with a 500 ms timeout, and
	// during an election its quorum check waits up to 1.5 s: a shorter
	// deadline would turn every poll of a failover into an error.
	fs.DurationVar(&c.pollTimeout, "poll-timeout", 3*time.Second, "deadline of each Status poll during failover")
	fs.DurationVar(&c.pollEvery, "poll-every", 100*time.Millisecond, "start a Status poll this often during failover (calls overlap)")
	fs.DurationVar(&c.watchInterval, "watch-interval", 10*time.Millisecond, "metrics scrape interval of the election watchers")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	if c.proposals < 0 || c.warmup < 0 || c.kills < 0 {
		return c, errors.New("-proposals, -warmup and -kills must not be negative")
	}
	return c, nil
}

// bench is one run: the cluster, its clients and the report being filled.
type bench struct {
	cfg     config
	log     *slog.Logger
	c       *testcluster.Cluster
	td      *testcluster.Tandem
	self    string // this executable, re-run inside namespaces as a helper
	ip      string
	procs   map[string]*testcluster.Proc   // current tandemd per node
	started map[string]time.Time           // when each current tandemd was started
	clients map[string]*adminclient.Client // admin socket clients per node
	rep     *Report
}

// execute runs the whole benchmark. A phase that fails is recorded in
// rep.Errors and the next one runs; a failed setup or an interruption ends
// the run with the report so far and the error.
func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	if err := testcluster.Available(); err != nil {
		return nil, fmt.Errorf("network namespaces: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating own executable: %w", err)
	}
	ip, err := testcluster.FindIP()
	if err != nil {
		return nil, err
	}
	tmp, bin, err := benchkit.TempBinaries(ctx, log, "control", cfg.Bin)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // runs last: after the cluster is closed

	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: filepath.Join(tmp, "cluster")}, testcluster.LogReporter(log))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	b := &bench{
		cfg: cfg, log: log, c: c, td: testcluster.NewTandem(c, bin), self: self, ip: ip,
		procs: map[string]*testcluster.Proc{}, started: map[string]time.Time{}, clients: map[string]*adminclient.Client{},
		rep: &Report{Date: began.UTC().Format(time.RFC3339), Host: benchkit.Host(), Tandemd: benchkit.Binary(filepath.Join(bin, "tandemd")), Params: Params{
			Nodes: nodes, Proposals: cfg.proposals, Warmup: cfg.warmup, Kills: cfg.kills, Settle: cfg.settle.String(), Idle: cfg.idle.String(),
			PollTimeout: cfg.pollTimeout.String(), PollEvery: cfg.pollEvery.String(), WatchInterval: cfg.watchInterval.String(), Timeout: cfg.Timeout.String(),
		}, Goals: Goals{FailoverMS: goalFailoverMS, RSSMB: goalRSSMB}},
	}
	defer b.close() // also on errors and signals; Close is idempotent

	if err := b.setup(ctx); err != nil {
		for _, n := range c.Nodes {
			log.Error("tandemd log tail", "node", n.Name, "log", c.LogTail(n, "tandemd", 15))
		}
		return b.rep, err // a partial report: the parameters and the error
	}
	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"idle memory after formation", func(ctx context.Context) error { return b.memory(ctx, "start") }},
		{"propose via leader", func(ctx context.Context) error { return b.propose(ctx, "leader") }},
		{"propose via follower", func(ctx context.Context) error { return b.propose(ctx, "follower") }},
		{"leader failover", b.failover},
		{"idle memory at the end", func(ctx context.Context) error { return b.memory(ctx, "end") }},
	}
	for _, ph := range phases {
		log.Info("phase", "name", ph.name)
		if err := ph.fn(ctx); err != nil {
			if ctx.Err() != nil {
				// The phases done so far are the partial report.
				b.rep.DurationS = time.Since(began).Seconds()
				return b.rep, fmt.Errorf("%s: %w", ph.name, err)
			}
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s: %v", ph.name, err))
			log.Error("phase failed", "name", ph.name, "err", err)
		}
	}
	b.rep.DaemonLog = benchkit.ScanDaemonLogs(c)
	if cfg.logs != "" {
		if err := benchkit.CopyLogs(c, nil, cfg.logs); err != nil {
			b.rep.Errors = append(b.rep.Errors, err.Error())
		}
	}
	b.evaluateGoals()
	b.rep.DurationS = time.Since(began).Seconds()
	return b.rep, nil
}

// close tears the cluster down and checks that no namespace of ours is left.
func (b *bench) close() {
	for _, cl := range b.clients {
		_ = cl.Close()
	}
	b.c.Close()
	benchkit.CheckNamespaces(b.log)
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.procs, b.started, err = benchkit.StartCluster(ctx, b.log, b.td, b.c, clusterName); err != nil {
		return err
	}
	st, err := b.leaderStatus(ctx)
	if err != nil {
		return err
	}
	b.log.Info("cluster ready", "leader", st.Leader, "term", st.Term)
	return nil
}

// healthy: every voter online and quorate with a leader.
func healthy(st *tandemv1.ClusterStatus) bool { return benchkit.Healthy(st, nodes) }

// client returns a cached admin socket client for n.
func (b *bench) client(ctx context.Context, n *testcluster.Node) (*adminclient.Client, error) {
	if cl, ok := b.clients[n.Name]; ok {
		return cl, nil
	}
	cl, err := adminclient.Dial(ctx, adminclient.Options{DataDir: b.td.DataDir(n)})
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", n.Name, err)
	}
	b.clients[n.Name] = cl
	return cl, nil
}

// dropClient forgets n's client, so that a restarted node gets a fresh
// connection instead of one stuck in gRPC's reconnect backoff.
func (b *bench) dropClient(n *testcluster.Node) {
	if cl, ok := b.clients[n.Name]; ok {
		_ = cl.Close()
		delete(b.clients, n.Name)
	}
}

func (b *bench) status(ctx context.Context, n *testcluster.Node, timeout time.Duration) (*tandemv1.ClusterStatus, error) {
	cl, err := b.client(ctx, n)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := cl.Cluster.Status(ctx, &tandemv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", n.Name, err)
	}
	return st, nil
}

// leaderStatus asks the nodes in turn for a healthy status.
func (b *bench) leaderStatus(ctx context.Context) (*tandemv1.ClusterStatus, error) {
	var errs []error
	for _, n := range b.c.Nodes {
		st, err := b.status(ctx, n, 5*time.Second)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !healthy(st):
			errs = append(errs, fmt.Errorf("%s: not healthy (quorate=%v leader=%q online %d/%d)", n.Name, st.Quorate, st.Leader, st.VotesOnline, st.Voters))
		case b.c.Node(st.Leader) == nil:
			errs = append(errs, fmt.Errorf("%s: unknown leader %q", n.Name, st.Leader))
		default:
			return st, nil
		}
	}
	return nil, fmt.Errorf("no healthy status: %w", errors.Join(errs...))
}

// propose runs the SetConfig series through the leader's or a follower's socket.
func (b *bench) propose(ctx context.Context, via string) error {
	if b.cfg.proposals == 0 {
		return nil
	}
	st, err := b.leaderStatus(ctx)
	if err != nil {
		return err
	}
	n := b.c.Node(st.Leader)
	if via == "follower" {
		for _, m := range b.c.Nodes {
			if m.Name != st.Leader {
				n = m
				break
			}
		}
	}
	res := ProposeResult{Via: via, Node: n.Name, LeaderBefore: st.Leader, Server: ServerHist{Node: n.Name}}
	cl, err := b.client(ctx, n)
	if err != nil {
		return err
	}
	set := func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := cl.Cluster.SetConfig(cctx, &tandemv1.SetConfigRequest{Values: map[string]string{configKey: via + "-" + strconv.Itoa(i)}})
		return err
	}
	for i := range b.cfg.warmup {
		if err := set(-1 - i); err != nil {
			return fmt.Errorf("warm-up SetConfig through %s: %w", n.Name, err)
		}
	}
	before, herr := b.proposeHistogram(ctx, n)

	b.log.Info("proposing", "via", via, "node", n.Name, "calls", b.cfg.proposals)
	res.SamplesMS = make([]float64, 0, b.cfg.proposals)
	began := time.Now()
	for i := range b.cfg.proposals {
		start := time.Now()
		err := set(i)
		took := time.Since(start)
		res.Calls++
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Errors++
			if len(res.ErrorSamples) < maxErrorSamples {
				res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("call %d after %s: %v", i, took.Round(time.Microsecond), err))
			}
			continue
		}
		res.SamplesMS = append(res.SamplesMS, benchkit.MS(took))
	}
	res.DurationS = time.Since(began).Seconds()
	res.Client = summarize(res.SamplesMS)
	for i := 0; i < len(res.SamplesMS); i += blockSize {
		res.BlockP50 = append(res.BlockP50, summarize(res.SamplesMS[i:min(i+blockSize, len(res.SamplesMS))]).P50)
	}

	after, aerr := b.proposeHistogram(ctx, n)
	switch {
	case herr != nil:
		res.Server.Error = herr.Error()
	case aerr != nil:
		res.Server.Error = aerr.Error()
	default:
		if err := res.Server.fill(before, after); err != nil {
			res.Server.Error = err.Error()
		}
	}
	if st, err := b.leaderStatus(ctx); err == nil {
		res.LeaderAfter = st.Leader
	}
	b.rep.Propose = append(b.rep.Propose, res)
	b.log.Info("propose done", "via", via, "p50_ms", res.Client.P50, "p99_ms", res.Client.P99, "errors", res.Errors,
		"server_p50_ms", fmtOpt(res.Server.P50MS), "server_p99_ms", fmtOpt(res.Server.P99MS))
	if res.Errors > 0 {
		return fmt.Errorf("%d of %d SetConfig calls through %s failed, first: %s", res.Errors, res.Calls, n.Name, res.ErrorSamples[0])
	}
	return nil
}

// proposeHistograms are the ok and error series of the metadata shard.
type proposeHistograms struct{ ok, errs histogram }

func (b *bench) proposeHistogram(ctx context.Context, n *testcluster.Node) (proposeHistograms, error) {
	var h proposeHistograms
	s, err := fetchMetrics(ctx, b.c, b.self, n)
	if err != nil {
		return h, err
	}
	const name = "tandem_raft_propose_seconds"
	if h.ok, err = extractHistogram(s, name, map[string]string{"shard": "metadata", "result": "ok"}); err != nil {
		return h, err
	}
	if h.errs, err = extractHistogram(s, name, map[string]string{"shard": "metadata", "result": "error"}); err != nil {
		return h, err
	}
	return h, nil
}

func (s *ServerHist) fill(before, after proposeHistograms) error {
	d, err := after.ok.minus(before.ok)
	if err != nil {
		return err
	}
	de, err := after.errs.minus(before.errs)
	if err != nil {
		return err
	}
	s.Delta, s.Observations, s.Errors = d, d.Count, de.Count
	s.P50MS, s.P99MS = opt(d.quantile(0.50)*1000), opt(d.quantile(0.99)*1000)
	if d.Count > 0 {
		s.MeanMS = opt(d.Sum / d.Count * 1000)
	}
	return nil
}

// failover runs the leader-kill rounds.
func (b *bench) failover(ctx context.Context) error {
	if b.cfg.kills == 0 {
		return nil
	}
	f := &FailoverResult{}
	b.rep.Failover = f
	var polls, detect, down, api, raft, write, restart, back, kill []float64
	defer func() {
		f.API, f.Raft, f.Write = summarize(api), summarize(raft), summarize(write)
		f.Poll, f.DetectPoll, f.DownStatus = summarize(polls), summarize(detect), summarize(down)
		f.Restart, f.BackOnline, f.Kill = summarize(restart), summarize(back), summarize(kill)
		f.AboveGoal, f.RaftAbove, f.WriteAbove = countAbove(api, goalFailoverMS), countAbove(raft, goalFailoverMS), countAbove(write, goalFailoverMS)
	}()
	for i := 1; i <= b.cfg.kills; i++ {
		r, pollMS, err := b.failoverRound(ctx, i)
		polls = append(polls, pollMS...)
		f.Rounds = append(f.Rounds, r)
		kill = append(kill, r.KillMS)
		if r.Error != "" {
			f.Failed++
		} else {
			api = append(api, r.FailoverMS)
			detect = append(detect, r.DetectPollMS)
		}
		if r.WriteMS > 0 {
			write = append(write, r.WriteMS)
		}
		if r.DownStatusMS > 0 {
			down = append(down, r.DownStatusMS)
		}
		if r.RaftMS != nil {
			raft = append(raft, *r.RaftMS)
		}
		if r.RestartMS > 0 {
			restart = append(restart, r.RestartMS)
		}
		if r.BackOnlineMS > 0 {
			back = append(back, r.BackOnlineMS)
		}
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		b.log.Info("failover round", "n", i, "killed", r.Killed, "new_leader", r.NewLeader, "api_ms", r.FailoverMS,
			"raft_ms", fmtOpt(r.RaftMS), "write_ms", r.WriteMS, "polls", r.Polls, "back_online_ms", r.BackOnlineMS, "error", r.Error)
	}
	if f.Failed > 0 {
		return fmt.Errorf("%d of %d rounds found no new leader within %s", f.Failed, b.cfg.kills, failoverTimeout)
	}
	return nil
}

// failoverRound kills the leader once. It returns the round, the durations
// of the Status polls made while the node was down, and an error only when
// the cluster could not be brought back to health (which ends the phase).
func (b *bench) failoverRound(ctx context.Context, i int) (Round, []float64, error) {
	r := Round{N: i}
	st, err := b.leaderStatus(ctx)
	if err != nil {
		return r, nil, err
	}
	victim := b.c.Node(st.Leader)
	r.Killed, r.TermBefore = victim.Name, st.Term
	var survivors []*testcluster.Node
	for _, n := range b.c.Nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	polled := survivors[0]
	r.Polled = polled.Name
	for _, n := range survivors {
		age := time.Since(b.started[n.Name]).Seconds()
		if r.YoungestSurvivorS == 0 || age < r.YoungestSurvivorS {
			r.YoungestSurvivorS = age
		}
	}
	cl, err := b.client(ctx, polled)
	if err != nil {
		return r, nil, err
	}

	// Watchers run from before the kill, so the first scrape after it is
	// bracketed by one before it.
	var ws []*watcher
	defer func() {
		for _, w := range ws {
			w.stop()
		}
	}()
	for _, n := range survivors {
		w, err := startWatcher(ctx, b.ip, b.self, n, b.cfg.watchInterval, failoverTimeout+10*time.Second)
		if err != nil {
			b.log.Warn("no election watcher", "node", n.Name, "err", err)
			continue
		}
		ws = append(ws, w)
		if s, err := w.waitReady(ctx, 5*time.Second); err != nil {
			b.log.Warn("election watcher not ready", "node", n.Name, "err", err)
		} else if s.term != r.TermBefore {
			b.log.Warn("watcher sees another term than the status", "node", n.Name, "watcher", s.term, "status", r.TermBefore)
		}
	}

	b.dropClient(victim)
	t0 := time.Now()
	b.c.Kill(victim)
	r.KillMS = benchkit.MS(time.Since(t0))

	// Writes are what failover is for: a second client retries SetConfig
	// through the same survivor meanwhile.
	wch := make(chan writeResult, 1)
	go func() { wch <- writeUntilOK(ctx, cl, t0, b.cfg.pollTimeout, i) }()

	det, pollMS, err := pollForLeader(ctx, cl, t0, victim.Name, b.cfg.pollEvery, b.cfg.pollTimeout)
	r.Polls, r.PollErrors = det.polls, det.errors
	if err != nil {
		return r, pollMS, err
	}
	if det.status == nil {
		r.Error = fmt.Sprintf("no quorate status with a new leader on %s within %s", polled.Name, failoverTimeout)
		b.log.Error("failover round failed", "n", i, "err", r.Error, "log", b.c.LogTail(polled, "tandemd", 20))
	} else {
		r.FailoverMS, r.DetectStartMS, r.DetectPollMS = benchkit.MS(det.end.Sub(t0)), benchkit.MS(det.start.Sub(t0)), benchkit.MS(det.end.Sub(det.start))
		r.NewLeader, r.TermAfter = det.status.Leader, det.status.Term
	}
	if r.Error == "" {
		// One more Status with the node still down: its cost once the
		// election is over.
		start := time.Now()
		if _, err := b.status(ctx, polled, b.cfg.pollTimeout); err == nil {
			r.DownStatusMS = benchkit.MS(time.Since(start))
		}
	}
	w := <-wch
	r.WriteMS, r.WriteAttempts = w.ms, w.attempts
	if w.err != "" {
		b.log.Warn("no write accepted after the kill", "round", i, "err", w.err)
	}
	b.raftFailover(&r, ws, t0)

	// Bring the node back and wait for a healthy cluster before the next round.
	started := time.Now()
	b.started[victim.Name] = started
	p, err := b.td.StartDaemon(ctx, victim)
	if err != nil {
		return r, pollMS, fmt.Errorf("restart tandemd on %s: %w", victim.Name, err)
	}
	b.procs[victim.Name] = p
	r.RestartMS = benchkit.MS(time.Since(started))
	for {
		ss, serr := b.status(ctx, polled, 2*time.Second)
		rs, rerr := b.status(ctx, victim, 2*time.Second)
		if serr == nil && rerr == nil && healthy(ss) && rs.Quorate && rs.Leader != "" {
			r.BackOnlineMS = benchkit.MS(time.Since(started))
			break
		}
		if time.Since(started) > backOnlineTimeout {
			return r, pollMS, fmt.Errorf("%s not back within %s (survivor: %v, restarted: %v)", victim.Name, backOnlineTimeout, describe(ss, serr), describe(rs, rerr))
		}
		if err := ctxtime.Sleep(ctx, 20*time.Millisecond); err != nil {
			return r, pollMS, err
		}
	}
	return r, pollMS, ctxtime.Sleep(ctx, b.cfg.settle)
}

// detection is the Status call that first showed the new leader.
type detection struct {
	start, end    time.Time
	status        *tandemv1.ClusterStatus // nil if none did in time
	polls, errors int
}

type pollOutcome struct {
	start, end time.Time
	st         *tandemv1.ClusterStatus
	err        error
}

// pollForLeader starts a Status call on the survivor every `every` (each
// with its own timeout, so several may be in flight) until one answers
// quorate with a leader other than killed. A Status call lasts at least
// the daemon's probe of the dead member, so back-to-back polling alone
// would see the new leader up to one such call late; staggered calls bound
// that lag by `every`. It returns the earliest-ending detection and the
// durations of all calls, including those still in flight at the
// detection, which are left to finish so that their duration is known.
func pollForLeader(ctx context.Context, cl *adminclient.Client, t0 time.Time, killed string, every, timeout time.Duration) (detection, []float64, error) {
	var det detection
	var durs []float64
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan pollOutcome)
	inflight := 0
	launch := func() {
		inflight++
		det.polls++
		go func() {
			start := time.Now()
			cctx, cancel := context.WithTimeout(pctx, timeout)
			st, err := cl.Cluster.Status(cctx, &tandemv1.StatusRequest{})
			cancel()
			results <- pollOutcome{start: start, end: time.Now(), st: st, err: err}
		}()
	}
	record := func(o pollOutcome) {
		durs = append(durs, benchkit.MS(o.end.Sub(o.start)))
		if o.err != nil {
			det.errors++
		}
	}
	// finish waits for the calls still in flight (each bounded by timeout).
	finish := func() error {
		for ; inflight > 0; inflight-- {
			o := <-results
			if ctx.Err() == nil {
				record(o)
			}
		}
		return ctx.Err()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	deadline := time.NewTimer(time.Until(t0.Add(failoverTimeout)))
	defer deadline.Stop()
	launch()
	for {
		select {
		case <-tick.C:
			launch()
		case o := <-results:
			inflight--
			if ctx.Err() != nil {
				cancel()
				return det, durs, finish()
			}
			record(o)
			if o.err == nil && o.st.Quorate && o.st.Leader != "" && o.st.Leader != killed {
				// Results arrive in completion order: this is the earliest end.
				det.start, det.end, det.status = o.start, o.end, o.st
				tick.Stop()
				return det, durs, finish()
			}
		case <-deadline.C:
			tick.Stop()
			return det, durs, finish()
		case <-ctx.Done():
			cancel()
			return det, durs, finish()
		}
	}
}

// writeResult is the outcome of writeUntilOK.
type writeResult struct {
	ms       float64 // from t0 to the end of the first successful call; 0 if none
	attempts int
	err      string // last error when no call succeeded
}

// writeUntilOK calls SetConfig back to back until one succeeds.
func writeUntilOK(ctx context.Context, cl *adminclient.Client, t0 time.Time, timeout time.Duration, round int) writeResult {
	var w writeResult
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := cl.Cluster.SetConfig(cctx, &tandemv1.SetConfigRequest{Values: map[string]string{configKey: fmt.Sprintf("failover-%d-%d", round, w.attempts)}})
		cancel()
		w.attempts++
		if err == nil {
			w.ms = benchkit.MS(time.Since(t0))
			return w
		}
		if ctx.Err() != nil || time.Since(t0) > failoverTimeout {
			w.err = err.Error()
			return w
		}
		_ = ctxtime.Sleep(ctx, 5*time.Millisecond) // errors can be instant; don't spin
	}
}

func describe(st *tandemv1.ClusterStatus, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("quorate=%v leader=%q online %d/%d", st.Quorate, st.Leader, st.VotesOnline, st.Voters)
}

// raftFailover dates the election from the watchers' scrapes: the earliest
// survivor to show a leader at a term above the one before the kill.
func (b *bench) raftFailover(r *Round, ws []*watcher, t0 time.Time) {
	deadline := time.Now().Add(2 * time.Second) // the API saw it, so Raft has
	for {
		var best *leaderSample
		var bestPrev leaderSample
		for _, w := range ws {
			hit, prev, ok := w.firstNewLeader(t0, r.TermBefore)
			if ok && (best == nil || hit.end.Before(best.end)) {
				best, bestPrev, r.RaftSeenOn = &hit, prev, w.node
			}
		}
		if best != nil {
			r.RaftMS = opt(benchkit.MS(best.end.Sub(t0)))
			if !bestPrev.start.IsZero() {
				r.RaftResMS = opt(benchkit.MS(best.end.Sub(bestPrev.start)))
			}
			return
		}
		if len(ws) == 0 || time.Now().After(deadline) {
			b.log.Warn("election not seen by the watchers", "round", r.N)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memory reads VmRSS and VmHWM of every tandemd after an idle period.
func (b *bench) memory(ctx context.Context, phase string) error {
	b.log.Info("idling before reading memory", "for", b.cfg.idle)
	if err := ctxtime.Sleep(ctx, b.cfg.idle); err != nil {
		return err
	}
	var errs []error
	for _, n := range b.c.Nodes {
		s := RSSSample{Phase: phase, Node: n.Name}
		p := b.procs[n.Name]
		if p == nil || !p.Alive() {
			s.Error = "tandemd not running"
		} else {
			s.PID = p.PID()
			m, err := procMemory(s.PID)
			if err != nil {
				s.Error = err.Error()
			}
			s.RSSMB, s.HWMMB, s.AnonMB, s.FileMB = m["VmRSS"], m["VmHWM"], m["RssAnon"], m["RssFile"]
		}
		if s.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", n.Name, s.Error))
		} else if m, err := fetchMetrics(ctx, b.c, b.self, n); err == nil {
			// Read after VmRSS: the scrape itself allocates.
			get := func(name string) float64 { v, _ := gauge(m, name); return v / 1e6 }
			s.HeapInuseMB, s.HeapReleasedMB, s.GoSysMB = get("go_memstats_heap_inuse_bytes"), get("go_memstats_heap_released_bytes"), get("go_memstats_sys_bytes")
		}
		b.rep.Memory = append(b.rep.Memory, s)
		b.log.Info("memory", "phase", phase, "node", n.Name, "pid", s.PID, "rss_mb", s.RSSMB, "hwm_mb", s.HWMMB)
	}
	return errors.Join(errs...)
}

// procMemory returns the kB fields of /proc/<pid>/status in MB (10^6
// bytes), checking that the PID is a tandemd (the harness's PID is the
// exec'd daemon).
func procMemory(pid int) (map[string]float64, error) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if c := strings.TrimSpace(string(comm)); c != "tandemd" {
		return nil, fmt.Errorf("pid %d is %q, not tandemd", pid, c)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
			vals[k] = kb * 1024 / 1e6
		}
	}
	for _, k := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile"} {
		if _, ok := vals[k]; !ok {
			return nil, fmt.Errorf("pid %d: no %s in /proc status", pid, k)
		}
	}
	return vals, nil
}

func (b *bench) evaluateGoals() {
	if f := b.rep.Failover; f != nil && len(f.Rounds) > 0 {
		ok := f.Failed == 0 && f.AboveGoal == 0 && len(f.Rounds) == b.cfg.kills
		b.rep.Goals.FailoverMet = &ok
	}
	if s, found := b.rep.maxRSS("end"); found {
		ok := s.RSSMB < goalRSSMB
		if st, found := b.rep.maxRSS("start"); found && st.RSSMB >= goalRSSMB {
			ok = false
		}
		b.rep.Goals.RSSMet = &ok
	}
}
