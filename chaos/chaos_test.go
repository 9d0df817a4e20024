package chaos

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// envInt reads a numeric environment variable, or def.
func envInt(t *testing.T, name string, def uint64) uint64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: not a number", name, v)
	}
	return n
}

// TestChaosSchedules runs seeded fault schedules against a real 3-node
// cluster (testcluster, tandemd, NBD clients) and fails on any anomaly,
// printing the one-line command that replays the schedule. `make test`
// runs 20 short ones (seeds 1..20); `make chaos` sets CHAOS_PROFILE=long,
// CHAOS_SCHEDULES, CHAOS_SEED and CHAOS_REPORT; CHAOS_SEEDS=a,b,c runs
// exactly those seeds (replaying several findings at once);
// CHAOS_SCHEDULE='isolate(primary(v0))@2s+22s' runs that one hand-written
// schedule (ParseSchedule) with seed CHAOS_SEED, the line's seed=, or 1.
func TestChaosSchedules(t *testing.T) {
	testcluster.Require(t)
	profile := os.Getenv("CHAOS_PROFILE")
	if profile == "" {
		profile = "ci"
	}
	if profile != "ci" && profile != "long" {
		t.Fatalf("CHAOS_PROFILE=%q: want ci or long", profile)
	}
	schedules := envInt(t, "CHAOS_SCHEDULES", 20)
	seed := envInt(t, "CHAOS_SEED", 1)
	var fixed *Schedule
	if spec := os.Getenv("CHAOS_SCHEDULE"); spec != "" {
		s, err := ParseSchedule(spec)
		if err != nil {
			t.Fatalf("CHAOS_SCHEDULE: %v", err)
		}
		if os.Getenv("CHAOS_SEED") != "" || !strings.Contains(spec, "seed=") {
			s.Seed = seed
		}
		// Not a seed's schedule: its replay is the line itself, and it
		// has no place in a report of random schedules.
		s.Profile = "fixed"
		if os.Getenv("CHAOS_REPORT") != "" {
			t.Fatal("CHAOS_SCHEDULE runs one hand-written schedule, which is not part of a report: unset CHAOS_REPORT")
		}
		fixed = &s
	}
	// VMs: 1 in the long profile, none in CI (a guest's creation and boot
	// under TCG costs every schedule 15-30 s).
	var defVMs uint64
	if profile == "long" {
		defVMs = 1
	}
	vms := envInt(t, "CHAOS_VMS", defVMs)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := testcluster.BuildBinaries(ctx, bin); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("CHAOS_LOG") == "info" {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	began := time.Now()
	r, err := Open(ctx, Config{BinDir: bin, BaseDir: base, Profile: profile, Reporter: t, Log: log, KeepDir: os.Getenv("CHAOS_KEEP"),
		FaultDisks: os.Getenv("CHAOS_DISK") == "1", Only: kindsFromEnv(os.Getenv("CHAOS_KINDS")), VMs: int(vms), RepoRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seeds := make([]uint64, 0, schedules)
	for i := range schedules {
		seeds = append(seeds, seed+i)
	}
	if fixed != nil {
		seeds = []uint64{fixed.Seed}
	} else if list := os.Getenv("CHAOS_SEEDS"); list != "" {
		// Replays of several findings at once: CHAOS_SEEDS=5,226,244.
		seeds = seeds[:0]
		for _, f := range strings.Split(list, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("CHAOS_SEEDS=%q: %v", list, err)
			}
			seeds = append(seeds, n)
		}
	}
	// CHAOS_FOR=2h ends a sitting after the schedule running when that
	// much time has passed (make chaos FOR=2h), so a long run fits the
	// time there is; CHAOS_APPEND=1 continues it in the next sitting.
	var budget time.Duration
	if v := os.Getenv("CHAOS_FOR"); v != "" {
		if budget, err = time.ParseDuration(v); err != nil || budget <= 0 {
			t.Fatalf("CHAOS_FOR=%q: want a positive duration such as 90m", v)
		}
	}
	sum := &Summary{Profile: profile, FirstSeed: seeds[0]}
	report := reportWriter(t, root, profile, began, int(vms), seeds)
	// Ctrl-C (or SIGTERM) ends the sitting after the running schedule, so
	// that its cluster, namespaces and FUSE mounts are taken down and the
	// report keeps what ran; a second signal kills at once, as usual.
	var interrupted atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case sig := <-sigs:
			signal.Stop(sigs) // the next one kills
			interrupted.Store(true)
			fmt.Fprintf(os.Stderr, "chaos: %s: stopping after the running schedule (again to kill at once, leaving namespaces and mounts behind)\n", sig)
		case <-done:
			signal.Stop(sigs)
		}
	}()
	for i, sd := range seeds {
		if budget > 0 && time.Since(began) >= budget {
			t.Logf("CHAOS_FOR=%s reached after %d of %d schedules; continue with SEED=%d APPEND=1", budget, i, len(seeds), sd)
			break
		}
		if interrupted.Load() {
			t.Logf("interrupted after %d of %d schedules; continue with SEED=%d APPEND=1", i, len(seeds), sd)
			break
		}
		var res *Result
		if fixed != nil {
			res, err = r.RunSchedule(ctx, *fixed)
		} else {
			res, err = r.Run(ctx, sd)
		}
		if err != nil {
			t.Fatalf("seed %d: the harness could not run the schedule: %v", sd, err)
		}
		sum.Add(res)
		t.Logf("seed %d: %d ops, %d acknowledged writes, %d reads checked, %d follower moves, %d disk hits, %d delayed packets, %d anomalies, %s: %s",
			res.Seed, res.Ops, res.AckedWrites, res.ReadsChecked, res.FollowerMoves, res.DiskHits, res.DelayedPackets, len(res.Anomalies), res.Wall.Round(time.Millisecond), res.Schedule)
		if vms > 0 {
			t.Logf("seed %d: VMs: %d libvirt samples, %d guest heartbeats, disk counter %d, %d QEMUs killed by the watchdog, %d restarts given up (vm start), ran on (node#domain ID) %v",
				res.Seed, res.VMSamples, res.GuestBeats, res.GuestCounter, res.WatchdogKills, res.VMGivenUp, res.VMTrail)
		}
		for _, a := range res.Anomalies {
			t.Errorf("seed %d: %s\n  schedule: %s\n  replay: %s", res.Seed, a, res.Schedule, res.Replay)
		}
		for _, h := range res.HarnessErrors {
			t.Errorf("seed %d: harness: %s (replay: %s)", res.Seed, h, res.Replay)
		}
		if res.AckedWrites == 0 {
			t.Errorf("seed %d: no write was acknowledged: the schedule checked nothing (replay: %s)", res.Seed, res.Replay)
		}
		// After every schedule, so a sitting stopped early keeps what
		// it ran.
		report(sum)
	}
	sum.Wall = time.Since(began)
	t.Logf("%d schedules, %d ops, %d acknowledged writes, %d anomalies, %s", sum.Schedules, sum.Ops, sum.AckedWrites, sum.Anomalies, sum.Wall.Round(time.Second))
}

// reportWriter returns what writes CHAOS_REPORT.{md,json} (nothing when
// it is unset) with the schedules of sum so far: alone, or with
// CHAOS_APPEND=1 merged into the report that was there when the run
// began, which is read once so that rewriting it after every schedule
// counts each schedule once.
func reportWriter(t *testing.T, root, profile string, began time.Time, vms int, seeds []uint64) func(sum *Summary) {
	t.Helper()
	prefix := os.Getenv("CHAOS_REPORT")
	if prefix == "" {
		return func(*Summary) {}
	}
	if !filepath.IsAbs(prefix) {
		// Relative to the module root, where make runs.
		prefix = filepath.Join(root, prefix)
	}
	var prior []byte
	if os.Getenv("CHAOS_APPEND") == "1" {
		data, err := os.ReadFile(prefix + ".json")
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			t.Fatalf("CHAOS_APPEND=1: %v", err)
		default:
			// Refused before any schedule runs, not after the first.
			old, err := ParseSummary(data)
			if err != nil {
				t.Fatalf("CHAOS_APPEND=1: %s.json: %v", prefix, err)
			}
			if err := old.Merge(&Summary{Profile: profile, Results: placeholders(seeds)}); err != nil {
				t.Fatalf("CHAOS_APPEND=1: %v", err)
			}
			prior = data
		}
	}
	commit := gitDescribe(root)
	return func(sum *Summary) {
		t.Helper()
		sum.Wall = time.Since(began)
		sum.Segments = []Segment{{Seeds: seedRange(sum.Results), Schedules: sum.Schedules, Anomalies: sum.Anomalies, Commit: commit,
			Date: began.UTC().Format(time.RFC3339), VMs: vms, Disk: os.Getenv("CHAOS_DISK") == "1", Wall: sum.Wall}}
		out := sum
		if prior != nil {
			old, err := ParseSummary(prior)
			if err != nil {
				t.Fatalf("CHAOS_APPEND=1: %s.json: %v", prefix, err)
			}
			if err := old.Merge(sum); err != nil {
				t.Fatalf("CHAOS_APPEND=1: %v", err)
			}
			out = old
		}
		if err := out.Write(prefix); err != nil {
			t.Fatal(err)
		}
	}
}

// placeholders stands for the results of seeds that have not run yet.
func placeholders(seeds []uint64) []*Result {
	rs := make([]*Result, len(seeds))
	for i, sd := range seeds {
		rs[i] = &Result{Seed: sd}
	}
	return rs
}

// gitDescribe names the tree a run tested (git describe), or "unknown".
func gitDescribe(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty", "--tags")
	cmd.Dir = root
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "unknown"
}

// testWriter sends the runner's log to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// kindsFromEnv parses CHAOS_KINDS (kind names, comma-separated).
func kindsFromEnv(v string) []Kind {
	var out []Kind
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, Kind(f))
		}
	}
	return out
}
