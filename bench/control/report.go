package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Goals the control plane must meet.
const (
	goalFailoverMS = 2000
	goalRSSMB      = 60
	// slowElectionMS flags elections well past dragonboat's usual 100-200 ms.
	slowElectionMS = 500
)

// Report is everything control.json holds.
type Report struct {
	Date      string                `json:"date"`
	DurationS float64               `json:"duration_s"`
	Host      benchkit.HostInfo     `json:"host"`
	Tandemd   benchkit.BinaryInfo   `json:"tandemd"`
	Params    Params                `json:"parameters"`
	Goals     Goals                 `json:"goals"`
	Propose   []ProposeResult       `json:"propose"`
	Failover  *FailoverResult       `json:"failover,omitempty"`
	Memory    []RSSSample           `json:"memory"`
	DaemonLog []benchkit.LogFinding `json:"daemon_log_findings"`
	Errors    []string              `json:"errors,omitempty"`
}

// Params are the knobs of the run.
type Params struct {
	Nodes         int    `json:"nodes"`
	Proposals     int    `json:"proposals"`
	Warmup        int    `json:"warmup"`
	Kills         int    `json:"kills"`
	Settle        string `json:"settle"`
	Idle          string `json:"idle"`
	PollTimeout   string `json:"status_poll_timeout"`
	PollEvery     string `json:"status_poll_every"`
	WatchInterval string `json:"watch_interval"`
	Timeout       string `json:"timeout"`
}

// Goals states the targets and whether this run met them (nil: not measured).
type Goals struct {
	FailoverMS  float64 `json:"failover_ms"`
	FailoverMet *bool   `json:"failover_met,omitempty"`
	RSSMB       float64 `json:"idle_rss_mb"`
	RSSMet      *bool   `json:"idle_rss_met,omitempty"`
}

// ProposeResult is one run of sequential SetConfig calls through one node.
type ProposeResult struct {
	Via          string    `json:"via"` // "leader" or "follower"
	Node         string    `json:"node"`
	LeaderBefore string    `json:"leader_before"`
	LeaderAfter  string    `json:"leader_after"`
	Calls        int       `json:"calls"`
	Errors       int       `json:"errors"`
	ErrorSamples []string  `json:"error_samples,omitempty"`
	DurationS    float64   `json:"duration_s"`
	Client       Summary   `json:"client"`
	SamplesMS    []float64 `json:"client_samples_ms"`
	// BlockP50 is the client p50 of each block of 100 consecutive calls.
	BlockP50 []float64  `json:"client_p50_per_100_calls_ms"`
	Server   ServerHist `json:"server"`
}

// ServerHist is the delta of tandem_raft_propose_seconds{shard="metadata",
// result="ok"} on the node that handled the calls.
type ServerHist struct {
	Node         string    `json:"node"`
	Observations float64   `json:"observations"`
	Errors       float64   `json:"error_observations"`
	P50MS        *float64  `json:"p50_ms_approx,omitempty"`
	P99MS        *float64  `json:"p99_ms_approx,omitempty"`
	MeanMS       *float64  `json:"mean_ms,omitempty"`
	Delta        histogram `json:"delta"`
	Error        string    `json:"error,omitempty"`
}

// FailoverResult holds the leader-kill rounds and their summaries.
type FailoverResult struct {
	Rounds     []Round `json:"rounds"`
	Failed     int     `json:"failed_rounds"`
	API        Summary `json:"api"`
	AboveGoal  int     `json:"api_above_goal"`
	Raft       Summary `json:"raft"`
	RaftAbove  int     `json:"raft_above_goal"`
	Write      Summary `json:"write"`
	WriteAbove int     `json:"write_above_goal"`
	DownStatus Summary `json:"status_after_failover_node_down"`
	Poll       Summary `json:"status_poll_while_down"`
	DetectPoll Summary `json:"status_poll_detecting"`
	Restart    Summary `json:"restart_to_socket"`
	BackOnline Summary `json:"restart_to_3of3"`
	Kill       Summary `json:"kill_call"`
}

// Round is one leader kill. Times are milliseconds from the SIGKILL.
type Round struct {
	N          int    `json:"n"`
	Killed     string `json:"killed"`
	TermBefore uint64 `json:"term_before"`
	Polled     string `json:"polled"`
	// YoungestSurvivorS is the age of the most recently started survivor:
	// failover right after a peer's restart is the known weak spot.
	YoungestSurvivorS float64 `json:"youngest_survivor_s"`
	NewLeader         string  `json:"new_leader,omitempty"`
	TermAfter         uint64  `json:"term_after,omitempty"`
	// KillMS is how long Cluster.Kill took (SIGKILL, sweep, reap).
	KillMS float64 `json:"kill_ms"`
	// FailoverMS: end of the first Status call on the polled survivor that
	// reported quorate with another leader.
	FailoverMS float64 `json:"failover_ms,omitempty"`
	// DetectStartMS and DetectPollMS: when that call started and how long it took.
	DetectStartMS float64 `json:"detect_poll_start_ms,omitempty"`
	DetectPollMS  float64 `json:"detect_poll_ms,omitempty"`
	Polls         int     `json:"polls"`
	PollErrors    int     `json:"poll_errors"`
	// RaftMS: first watcher scrape on a survivor showing a leader at a
	// higher term; RaftResMS is the width of the bracket around it.
	RaftMS     *float64 `json:"raft_ms,omitempty"`
	RaftResMS  *float64 `json:"raft_resolution_ms,omitempty"`
	RaftSeenOn string   `json:"raft_seen_on,omitempty"`
	// WriteMS: end of the first SetConfig through the polled survivor that
	// succeeded, retried back to back from t0 by a second client.
	WriteMS       float64 `json:"write_ms,omitempty"`
	WriteAttempts int     `json:"write_attempts"`
	// DownStatusMS: one more Status on the survivor after the new leader
	// was seen, with the killed node still down.
	DownStatusMS float64 `json:"status_after_failover_ms,omitempty"`
	// RestartMS: from starting tandemd again until its socket answered;
	// BackOnlineMS: until the survivor saw 3/3 online and quorate and the
	// restarted node itself was quorate.
	RestartMS    float64 `json:"restart_to_socket_ms,omitempty"`
	BackOnlineMS float64 `json:"restart_to_3of3_ms,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// RSSSample is one tandemd's memory at one point of the run.
type RSSSample struct {
	Phase string  `json:"phase"`
	Node  string  `json:"node"`
	PID   int     `json:"pid"`
	RSSMB float64 `json:"vm_rss_mb"`
	HWMMB float64 `json:"vm_hwm_mb"`
	// VmRSS = RssAnon + RssFile (+ RssShmem); RssFile is mostly the
	// daemon's own binary pages.
	AnonMB float64 `json:"rss_anon_mb"`
	FileMB float64 `json:"rss_file_mb"`
	// From the node's Go runtime metrics, scraped right after.
	HeapInuseMB    float64 `json:"go_heap_inuse_mb"`
	HeapReleasedMB float64 `json:"go_heap_released_mb"`
	GoSysMB        float64 `json:"go_sys_mb"`
	Error          string  `json:"error,omitempty"`
}

func opt(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

func fmtOpt(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmtMS(*p)
}

func (r *Report) propose(via string) *ProposeResult {
	for i := range r.Propose {
		if r.Propose[i].Via == via {
			return &r.Propose[i]
		}
	}
	return nil
}

func (r *Report) maxRSS(phase string) (RSSSample, bool) {
	var best RSSSample
	found := false
	for _, s := range r.Memory {
		if s.Phase == phase && s.Error == "" && (!found || s.RSSMB > best.RSSMB) {
			best, found = s, true
		}
	}
	return best, found
}

// Markdown renders the human report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# Tandem control-plane benchmark\n\n")
	p("Run %s (%.0f s). Host: %s.  \n", r.Date, r.DurationS, r.Host.Summary(""))
	p("tandemd: %s (%s).  \n", r.Tandemd.RevisionSummary(), r.Tandemd.GoVersion)
	p("Cluster: %d tandemd nodes, each in its own network namespace on this one host (internal/testcluster), default Raft timing (RTT 10 ms, election 10 RTT, heartbeat 1 RTT).  \n", r.Params.Nodes)
	p("Parameters: %d proposals per path after %d warm-up calls, %d leader kills, settle %s between kills, idle %s before memory readings, a Status poll started every %s with a %s timeout, metrics watcher interval %s.\n\n",
		r.Params.Proposals, r.Params.Warmup, r.Params.Kills, r.Params.Settle, r.Params.Idle, r.Params.PollEvery, r.Params.PollTimeout, r.Params.WatchInterval)

	p("## Results against the goals\n\n")
	benchkit.NewTable(&b, "Measure", "Result", "Goal", "Verdict")
	if f := r.Failover; f != nil {
		p("| Leader failover seen by an API client: SIGKILL of the leader → a survivor's `Status` answers quorate with a new leader (%d kills) | p50 %s, p95 %s, max %s; %d above 2 s, %d without a new leader | < 2 s | %s |\n",
			f.API.Count+f.Failed, fmtMS(f.API.P50), fmtMS(f.API.P95), fmtMS(f.API.Max), f.AboveGoal, f.Failed, benchkit.PassFail(r.Goals.FailoverMet))
		p("| Writes again, same kills: SIGKILL → first `SetConfig` through that survivor succeeds | p50 %s, p95 %s, max %s; %d above 2 s | (information) | |\n",
			fmtMS(f.Write.P50), fmtMS(f.Write.P95), fmtMS(f.Write.Max), f.WriteAbove)
		p("| Raft election, same kills: SIGKILL → a survivor's metrics show a leader at a higher term | p50 %s, p95 %s, max %s | (information) | |\n",
			fmtMS(f.Raft.P50), fmtMS(f.Raft.P95), fmtMS(f.Raft.Max))
	}
	if s, ok := r.maxRSS("end"); ok {
		p("| Idle RSS of tandemd, largest node, end of run | %.1f MB (%s) | < %d MB | %s |\n", s.RSSMB, s.Node, goalRSSMB, benchkit.PassFail(r.Goals.RSSMet))
	}
	if s, ok := r.maxRSS("start"); ok {
		p("| Idle RSS of tandemd, largest node, after formation | %.1f MB (%s) | < %d MB | |\n", s.RSSMB, s.Node, goalRSSMB)
	}
	for _, via := range []string{"leader", "follower"} {
		if pr := r.propose(via); pr != nil {
			p("| Metadata `SetConfig` through the %s's socket (%s), client-side | p50 %s, p99 %s (%d errors) | (no goal yet) | |\n",
				via, pr.Node, fmtMS(pr.Client.P50), fmtMS(pr.Client.P99), pr.Errors)
		}
	}
	p("\n")

	if len(r.Propose) > 0 {
		p("## Metadata propose latency\n\n")
		p("Sequential `Cluster.SetConfig` calls (one in flight), each overwriting the key `bench.seq`, over the node's unix admin socket with the adminclient package. " +
			"Client-side time covers gRPC over the socket, the token check, a ReadIndex quorum check, one Raft proposal committed and applied on the node handling the call, " +
			"and the linearizable read-back of the configuration that SetConfig returns. A follower hands the proposal to the leader inside dragonboat. Failed calls are counted, not timed.\n\n")
		benchkit.NewTable(&b, "Path", "Node", "Calls", "Errors", "p50", "p90", "p99", "max", "mean")
		for _, pr := range r.Propose {
			c := pr.Client
			p("| %s | %s | %d | %d | %s | %s | %s | %s | %s |\n", pr.Via, pr.Node, pr.Calls, pr.Errors, fmtMS(c.P50), fmtMS(c.P90), fmtMS(c.P99), fmtMS(c.Max), fmtMS(c.Mean))
		}
		p("\nServer side: delta of `tandem_raft_propose_seconds{shard=\"metadata\",result=\"ok\"}` on the node that handled the calls (time for `Host.Propose`: commit and local apply, retries included), " +
			"scraped before and after from inside the node's namespace. Buckets double from 0.2 ms, so p50/p99 are interpolated within a bucket and only approximate.\n\n")
		benchkit.NewTable(&b, "Path", "Node", "Observations", "≈p50", "≈p99", "mean", "error observations")
		for _, pr := range r.Propose {
			s := pr.Server
			if s.Error != "" {
				p("| %s | %s | scrape failed: %s | | | | |\n", pr.Via, s.Node, s.Error)
				continue
			}
			p("| %s | %s | %.0f | %s | %s | %s | %.0f |\n", pr.Via, s.Node, s.Observations, fmtOpt(s.P50MS), fmtOpt(s.P99MS), fmtOpt(s.MeanMS), s.Errors)
		}
		p("\nClient p50 per block of 100 consecutive calls, in order (drift over the run):\n\n")
		for _, pr := range r.Propose {
			var bs []string
			for _, v := range pr.BlockP50 {
				bs = append(bs, fmt.Sprintf("%.2f", v))
			}
			p("- %s: %s ms\n", pr.Via, strings.Join(bs, ", "))
		}
		for _, pr := range r.Propose {
			if pr.LeaderBefore != pr.LeaderAfter {
				p("\nNote: the leader changed during the %s run (%s → %s).\n", pr.Via, pr.LeaderBefore, pr.LeaderAfter)
			}
			for _, e := range pr.ErrorSamples {
				p("\nError through the %s: `%s`\n", pr.Via, e)
			}
		}
		p("\n")
	}

	if f := r.Failover; f != nil {
		p("## Leader failover\n\n")
		p("Each round reads the leader from a Status, starts a metrics watcher inside each survivor's namespace, records t0 and SIGKILLs every process of the leader's host (`Cluster.Kill`). "+
			"It then starts a `Cluster.Status` call on one survivor through its unix socket every %s (each with a %s timeout, so calls overlap) until one answers quorate with a leader other than the killed node. "+
			"**API failover** is the time from t0 to the end of the first such answer, so it includes that call's own duration: with a member down a Status call lasts at least the daemon's probe of it (see the Status rows). "+
			"Overlapping calls keep the lag between the new leader and its first sighting to one poll interval plus one call, where back-to-back calls could add a second call. "+
			"Meanwhile a second client retries `SetConfig` through the same survivor back to back: **writes again** is the end of the first call that succeeds. "+
			"**Raft election** is the end of the first watcher scrape (every %s, `/metrics` gauges `tandem_raft_metadata_has_leader` and `_term`) showing a leader at a term above the one before the kill. "+
			"The killed node is then restarted and the round ends once the survivor shows 3/3 voters online and quorate and the restarted node is quorate itself, plus %s of settling.\n\n",
			r.Params.PollEvery, r.Params.PollTimeout, r.Params.WatchInterval, r.Params.Settle)
		benchkit.NewTable(&b, "Measure", "n", "min", "p50", "p95", "max", "> 2 s")
		row := func(name string, s Summary, above string) {
			p("| %s | %d | %s | %s | %s | %s | %s |\n", name, s.Count, fmtMS(s.Min), fmtMS(s.P50), fmtMS(s.P95), fmtMS(s.Max), above)
		}
		row("API failover (kill → Status quorate with new leader)", f.API, fmt.Sprint(f.AboveGoal))
		row("Writes again (kill → first successful SetConfig)", f.Write, fmt.Sprint(f.WriteAbove))
		row("Raft election (kill → leader at higher term in metrics)", f.Raft, fmt.Sprint(f.RaftAbove))
		row("Status call duration: the polls that saw the new leader", f.DetectPoll, "")
		row("Status call duration: all polls while a node was down", f.Poll, "")
		row("Status call duration: one call after failover, node still down", f.DownStatus, "")
		row("Restart: tandemd started → admin socket answers", f.Restart, "")
		row("Restart: tandemd started → 3/3 online and quorate", f.BackOnline, "")
		row("`Cluster.Kill` call (SIGKILL + sweep + reap)", f.Kill, "")
		p("\nPer round (ms from t0):\n\n")
		benchkit.NewTable(&b, "#", "killed", "term", "youngest survivor", "polled", "new leader", "term", "Raft", "writes (attempts)", "API", "detecting poll start + duration", "polls started (errors)", "back 3/3")
		for _, rd := range f.Rounds {
			raft := fmtOpt(rd.RaftMS)
			if rd.RaftSeenOn != "" {
				raft += " (" + rd.RaftSeenOn + ")"
			}
			write := "none"
			if rd.WriteMS > 0 {
				write = fmtMS(rd.WriteMS)
			}
			write += fmt.Sprintf(" (%d)", rd.WriteAttempts)
			if rd.Error != "" {
				p("| %d | %s | %d | %.1f s | %s | — | | %s | %s | — | | %d (%d) | error: %s |\n", rd.N, rd.Killed, rd.TermBefore, rd.YoungestSurvivorS, rd.Polled, raft, write, rd.Polls, rd.PollErrors, rd.Error)
				continue
			}
			p("| %d | %s | %d | %.1f s | %s | %s | %d | %s | %s | %s | %.0f + %.0f | %d (%d) | %s |\n", rd.N, rd.Killed, rd.TermBefore, rd.YoungestSurvivorS, rd.Polled, rd.NewLeader, rd.TermAfter,
				raft, write, fmtMS(rd.FailoverMS), rd.DetectStartMS, rd.DetectPollMS, rd.Polls, rd.PollErrors, fmtMS(rd.BackOnlineMS))
		}
		var slow []string
		for _, rd := range f.Rounds {
			if rd.RaftMS != nil && *rd.RaftMS > slowElectionMS {
				slow = append(slow, fmt.Sprintf("round %d (election %s, term %d → %d, youngest survivor started %.1f s before the kill)",
					rd.N, fmtMS(*rd.RaftMS), rd.TermBefore, rd.TermAfter, rd.YoungestSurvivorS))
			}
		}
		if len(slow) > 0 {
			p("\nElections slower than %d ms: %s.\n", slowElectionMS, strings.Join(slow, "; "))
		}
		p("\n")
	}

	if len(r.Memory) > 0 {
		p("## Idle memory\n\n")
		p("VmRSS, its anonymous and file-backed parts and VmHWM (peak) from `/proc/<pid>/status` of each tandemd after %s without requests, once after the cluster formed and once at the end; "+
			"the Go runtime's own view (`go_memstats_*` from the node's metrics) is scraped right after. "+
			"Nodes killed and restarted during the failover rounds are younger processes at the end. MB = 10^6 bytes.\n\n", r.Params.Idle)
		benchkit.NewTable(&b, "When", "Node", "PID", "VmRSS", "of which anon", "of which file", "VmHWM", "Go heap in use", "Go heap released", "Go sys")
		for _, s := range r.Memory {
			if s.Error != "" {
				p("| %s | %s | %d | error: %s | | | | | | |\n", s.Phase, s.Node, s.PID, s.Error)
				continue
			}
			p("| %s | %s | %d | %.1f MB | %.1f MB | %.1f MB | %.1f MB | %.1f MB | %.1f MB | %.1f MB |\n", s.Phase, s.Node, s.PID, s.RSSMB, s.AnonMB, s.FileMB, s.HWMMB, s.HeapInuseMB, s.HeapReleasedMB, s.GoSysMB)
		}
		p("\n")
	}

	if len(r.DaemonLog) > 0 {
		p("## Warnings and errors in the tandemd logs\n\n")
		p("Grouped with digits masked; counts over the whole run, all nodes.\n\n")
		benchkit.FindingsTable{Column: "Example", Example: true, Width: 240, NodeSep: ":", Join: " "}.WriteFindings(&b, r.DaemonLog)
		p("\n")
	}

	p("## Caveats\n\n")
	for _, c := range []string{
		"All nodes share one machine: its CPUs, its disk and its kernel. Raft traffic crosses veth pairs and a bridge (tens of µs), so the latencies are software and fsync cost, not network; separate hosts add their round trip to every commit.",
		"The propose figures are at one request in flight; they say nothing about throughput or behaviour under concurrent load.",
		"SIGKILL makes the kernel close the dead node's sockets, so peers get connection resets at once. A host that disappears without a word (power loss, cable pulled) leaves peers to time out instead; the failover benchmark still to come covers that.",
		"API failover includes the duration of the Status call that saw the new leader, because that is what a client waits for; see the detecting-poll column for how much of it that was.",
		"The watcher and the benchmark compare wall-clock timestamps taken in different processes on the same host; the clock is shared, so this is exact to within scheduling noise.",
		"Every round restarts the node it killed, so apart from the first, every kill comes a few seconds after some node restarted (see the youngest-survivor column). That is the situation in which dragonboat's transport is known to be slow (RECIPES.md: circuit breaker); a cluster that has been stable for long may fail over differently.",
		"Idle RSS depends on when the Go runtime returns freed memory to the kernel; VmHWM shows the peak reached during the run.",
	} {
		p("- %s\n", c)
	}
	if len(r.Errors) > 0 {
		p("\n## Errors during the run\n\n")
		for _, e := range r.Errors {
			p("- %s\n", e)
		}
	}
	return b.String()
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors (benchkit.Report).
func (rep *Report) Problems() int { return len(rep.Errors) }
