package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// linkDiverged is the replication link state of a replica holding writes the
// primary never acknowledged (see replication.peerState).
const linkDiverged = "diverged"

// plainEvery spaces out progress lines when stderr is not a terminal, so logs
// stay short; a change in the replicas' states is printed at once.
const plainEvery = 10 * time.Second

// barWidth is the number of cells in the progress bar; the whole line stays
// under 80 columns so \r can redraw it without wrapping.
const barWidth = 20

// resyncWaiter polls a volume until its resync is over.
type resyncWaiter struct {
	client   tandemv1.VolumeClient
	name     string
	interval time.Duration
	limit    time.Duration
	progress *progressOutput
}

// resyncSummary is what the finished wait reports.
type resyncSummary struct {
	sent int64
	took time.Duration
}

// wait polls Show until no replica needs data any more. Each Show keeps the
// per-call --timeout: the wait limit is a timer rather than a context
// deadline, which would replace it.
func (rw *resyncWaiter) wait(ctx context.Context) (*tandemv1.VolumeInfo, resyncSummary, error) {
	start := time.Now()
	limit := time.NewTimer(rw.limit)
	defer limit.Stop()
	tick := time.NewTicker(rw.interval)
	defer tick.Stop()

	p := newResyncProgress(start)
	var last *tandemv1.VolumeInfo
	defer rw.progress.finish()
	for {
		info, err := rw.client.Show(ctx, &tandemv1.ShowVolumeRequest{Name: rw.name})
		switch {
		case ctx.Err() != nil:
			return nil, resyncSummary{}, rw.stopped(ctx)
		case err != nil && retryable(err):
			// A primary change or a slow node; the wait limit bounds retries.
			rw.progress.note(fmt.Sprintf("volume %q: %s; retrying", rw.name, adminclient.Explain(err)))
		case err != nil:
			return nil, resyncSummary{}, fmt.Errorf("follow resync of volume %q: %w", rw.name, err)
		default:
			last = info
			now := time.Now()
			p.observe(info, now)
			for _, r := range info.GetReplicas() {
				if r.GetLink() == linkDiverged {
					rw.progress.update(rw.name, p, info, true)
					return nil, resyncSummary{}, fmt.Errorf("%s; resync cannot make it UpToDate", divergedMessage(info, r))
				}
			}
			done := resyncOver(info)
			rw.progress.update(rw.name, p, info, done)
			if done {
				if bad := notUpToDate(info); bad != "" {
					return nil, resyncSummary{}, fmt.Errorf("volume %q: nothing left to resync, but not every replica is UpToDate: %s", rw.name, bad)
				}
				return info, resyncSummary{sent: p.sent, took: now.Sub(start)}, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, resyncSummary{}, rw.stopped(ctx)
		case <-limit.C:
			state := "no answer from the volume yet"
			if last != nil {
				state = fmt.Sprintf("replicas %s, %s dirty", replicaStates(last), formatBytes(p.dirty))
			}
			return nil, resyncSummary{}, fmt.Errorf("gave up waiting for volume %q after %s (%s); the resync goes on in the cluster: follow it with 'tandem volume show %s' or wait longer with --timeout-wait",
				rw.name, rw.limit, state, rw.name)
		case <-tick.C:
		}
	}
}

// stopped reports Ctrl-C. It does not wrap ctx.Err(): Explain would shorten
// the message to "interrupted" and lose the hint that the resync goes on.
func (rw *resyncWaiter) stopped(ctx context.Context) error {
	return fmt.Errorf("stopped waiting (%v); the resync of volume %q goes on in the cluster: follow it with 'tandem volume show %s'",
		context.Cause(ctx), rw.name, rw.name)
}

// retryable errors are worth another poll: the daemon or the volume's
// primary may be moving.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// resyncOver reports that no replica is behind or being synced and no dirty
// bytes remain. SyncSource counts as in progress: the primary is still sending.
func resyncOver(info *tandemv1.VolumeInfo) bool {
	for _, r := range info.GetReplicas() {
		switch r.GetState() {
		case tandemv1.ReplicaState_REPLICA_STATE_OUTDATED, tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT,
			tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET, tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE,
			tandemv1.ReplicaState_REPLICA_STATE_FAILED:
			return false
		}
		if r.GetDirtyBytes() > 0 {
			return false
		}
	}
	return true
}

// notUpToDate lists the replicas that are not UpToDate, or "" if none.
func notUpToDate(info *tandemv1.VolumeInfo) string {
	var bad []string
	for _, r := range info.GetReplicas() {
		if r.GetState() != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
			bad = append(bad, fmt.Sprintf("%s:%s", orDash(r.GetNode()), replicaStateName(r.GetState())))
		}
	}
	return strings.Join(bad, " ")
}

func divergedMessage(v *tandemv1.VolumeInfo, r *tandemv1.VolumeReplica) string {
	return fmt.Sprintf("volume %q: the replica on %s has diverged from primary %s (it holds writes the primary never acknowledged)",
		v.GetName(), orDash(r.GetNode()), orDash(v.GetPrimary()))
}

// resyncProgress accounts bytes sent to the secondaries since the wait began.
type resyncProgress struct {
	start time.Time
	now   time.Time
	// total is the dirty bytes when waiting began, grown if guests dirty more.
	total int64
	sent  int64
	dirty int64
	// last is each secondary's resync_sent_bytes at the previous poll.
	last map[string]int64
}

func newResyncProgress(start time.Time) *resyncProgress {
	return &resyncProgress{start: start, now: start, last: map[string]int64{}}
}

func (p *resyncProgress) observe(info *tandemv1.VolumeInfo, now time.Time) {
	p.now = now
	var dirty int64
	for _, r := range info.GetReplicas() {
		if r.GetPrimary() {
			continue
		}
		dirty += max(r.GetDirtyBytes(), 0)
		cur := r.GetResyncSentBytes()
		prev, seen := p.last[r.GetNode()]
		switch {
		case !seen:
			// Bytes sent before the first poll belong to the baseline: the
			// dirty count at that poll already excludes them.
		case cur >= prev:
			p.sent += cur - prev
		default:
			// The counter went back: a new resync started from zero.
			p.sent += cur
		}
		p.last[r.GetNode()] = cur
	}
	p.dirty = dirty
	p.total = max(p.total, p.sent+dirty)
}

// done is the part of total no longer dirty.
func (p *resyncProgress) done() int64 { return max(p.total-p.dirty, 0) }

// rate is the average since the wait began, in bytes per second; 0 until
// there is something to average.
func (p *resyncProgress) rate() float64 {
	el := p.now.Sub(p.start)
	if el < time.Second || p.sent <= 0 {
		return 0
	}
	return float64(p.sent) / el.Seconds()
}

func (p *resyncProgress) rateString() string {
	r := p.rate()
	if r <= 0 {
		return "--/s"
	}
	return formatBytes(int64(r)) + "/s"
}

func (p *resyncProgress) etaString() string {
	if p.dirty == 0 {
		return "0s"
	}
	r := p.rate()
	if r <= 0 {
		return "--"
	}
	secs := float64(p.dirty) / r
	switch {
	case secs < 1:
		return "<1s"
	case secs > 99*3600:
		return ">99h"
	}
	return (time.Duration(secs) * time.Second).String()
}

func (p *resyncProgress) percent() int {
	if p.total <= 0 {
		if p.dirty == 0 {
			return 100
		}
		return 0
	}
	return int(p.done() * 100 / p.total)
}

// bar is the one-line progress display for a terminal. It leaves out the
// volume name, which the user just typed, to stay within 80 columns.
func (p *resyncProgress) bar() string {
	filled := int(int64(barWidth) * p.done() / max(p.total, 1))
	if p.total <= 0 && p.dirty == 0 {
		filled = barWidth
	}
	return fmt.Sprintf("[%s%s] %3d%% %s/%s %s ETA %s",
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), p.percent(),
		formatBytes(p.done()), formatBytes(p.total), p.rateString(), p.etaString())
}

// line is the periodic progress line for logs.
func (p *resyncProgress) line(name string, info *tandemv1.VolumeInfo) string {
	return fmt.Sprintf("resync %s: %d%% (%s of %s), %s, ETA %s; %s", name, p.percent(),
		formatBytes(p.done()), formatBytes(p.total), p.rateString(), p.etaString(), replicaStates(info))
}

// progressOutput draws progress on stderr: a bar redrawn in place on a
// terminal, plain lines otherwise.
type progressOutput struct {
	w   io.Writer
	tty bool

	drawn      int // length of the bar line on screen, 0 if none
	lastPlain  time.Time
	lastStates string
}

func newProgressOutput(w io.Writer, tty bool) *progressOutput {
	return &progressOutput{w: w, tty: tty}
}

func (o *progressOutput) update(name string, p *resyncProgress, info *tandemv1.VolumeInfo, final bool) {
	if o.tty {
		o.draw(p.bar())
		return
	}
	states := replicaStates(info)
	if final || states != o.lastStates || p.now.Sub(o.lastPlain) >= plainEvery {
		fmt.Fprintln(o.w, p.line(name, info))
		o.lastPlain, o.lastStates = p.now, states
	}
}

// draw replaces the bar line. Padding with spaces instead of an erase escape
// keeps it working on dumb terminals.
func (o *progressOutput) draw(s string) {
	pad := max(o.drawn-len(s), 0)
	fmt.Fprintf(o.w, "\r%s%s", s, strings.Repeat(" ", pad))
	o.drawn = len(s)
}

// note prints a message on its own line; the bar comes back on the next update.
func (o *progressOutput) note(msg string) {
	if o.tty && o.drawn > 0 {
		o.draw("")
		fmt.Fprint(o.w, "\r")
		o.drawn = 0
	}
	fmt.Fprintln(o.w, msg)
}

// finish leaves the last bar on screen and moves to a fresh line, so what
// follows (an error, the shell prompt) does not overwrite it.
func (o *progressOutput) finish() {
	if o.tty && o.drawn > 0 {
		fmt.Fprintln(o.w)
		o.drawn = 0
	}
}

// isTerminalWriter reports whether w is a terminal, where a redrawn bar works.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
