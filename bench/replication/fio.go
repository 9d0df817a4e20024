package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Job IDs, in the order they run and are reported.
const (
	jobDurable = "qd1-write-flush"
	jobQD1     = "qd1-write"
	jobQD32    = "qd32-write"
	jobSeq     = "seq-1m"
	jobPrefill = "prefill"
)

// JobSpec is one fio workload, run identically on every target.
type JobSpec struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	RW        string `json:"rw"`
	BlockSize string `json:"bs"`
	IODepth   int    `json:"iodepth"`
	// SyncEvery is fio's --fsync (or, for the fdatasync floor,
	// --fdatasync): a flush after every write. 0 means none.
	SyncEvery int `json:"sync_every,omitempty"`
	// Throughput jobs are reported in MB/s rather than IOPS.
	Throughput bool `json:"throughput,omitempty"`
	// TimeBased jobs run for -ramp + -runtime; the prefill writes the
	// whole size once instead.
	TimeBased bool `json:"time_based"`
}

func benchJobs() []JobSpec {
	return []JobSpec{
		{ID: jobDurable, Title: "4K random write, QD1, each write followed by a flush (--fsync=1)", RW: "randwrite", BlockSize: "4k", IODepth: 1, SyncEvery: 1, TimeBased: true},
		{ID: jobQD1, Title: "4K random write, QD1, no flush", RW: "randwrite", BlockSize: "4k", IODepth: 1, TimeBased: true},
		{ID: jobQD32, Title: "4K random write, QD32, no flush", RW: "randwrite", BlockSize: "4k", IODepth: 32, TimeBased: true},
		{ID: jobSeq, Title: "1M sequential write, QD4, no flush", RW: "write", BlockSize: "1M", IODepth: 4, Throughput: true, TimeBased: true},
	}
}

func prefillJob() JobSpec {
	return JobSpec{ID: jobPrefill, Title: "prefill: one sequential 1M write pass over the whole size, QD4", RW: "write", BlockSize: "1M", IODepth: 4, Throughput: true}
}

// fioParams are the run-wide fio settings.
type fioParams struct {
	size    int64
	runtime time.Duration
	ramp    time.Duration
}

// fioArgs builds the fio command line (without the fio binary) for one job
// on one target. engine holds the target's --ioengine and its options.
func fioArgs(j JobSpec, p fioParams, engine []string, syncOpt, output string) []string {
	args := []string{
		"--name=" + j.ID,
		"--rw=" + j.RW,
		"--bs=" + j.BlockSize,
		"--iodepth=" + strconv.Itoa(j.IODepth),
		"--size=" + strconv.FormatInt(p.size, 10),
		"--numjobs=1",
		"--randrepeat=0",
		"--norandommap",
		"--percentile_list=50:99:99.9",
		"--output-format=json",
		"--output=" + output,
	}
	args = append(args, engine...)
	if j.SyncEvery > 0 {
		if syncOpt == "" {
			syncOpt = "fsync"
		}
		args = append(args, fmt.Sprintf("--%s=%d", syncOpt, j.SyncEvery))
	}
	if j.TimeBased {
		args = append(args, "--time_based", "--runtime="+fioDuration(p.runtime), "--ramp_time="+fioDuration(p.ramp))
	}
	return args
}

// fioDuration renders d in fio's time syntax (milliseconds suffix).
func fioDuration(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// fioOutput is the part of fio's --output-format=json we read.
type fioOutput struct {
	Version string            `json:"fio version"`
	Jobs    []json.RawMessage `json:"jobs"`
}

type fioJob struct {
	Name         string  `json:"jobname"`
	Error        int     `json:"error"`
	JobRuntimeMS int64   `json:"job_runtime"`
	UsrCPU       float64 `json:"usr_cpu"`
	SysCPU       float64 `json:"sys_cpu"`
	Write        fioDir  `json:"write"`
	Sync         fioSync `json:"sync"`
}

type fioDir struct {
	IOBytes   int64   `json:"io_bytes"`
	BWBytes   float64 `json:"bw_bytes"`
	IOPS      float64 `json:"iops"`
	RuntimeMS int64   `json:"runtime"`
	TotalIOs  int64   `json:"total_ios"`
	Slat      fioLat  `json:"slat_ns"`
	Clat      fioLat  `json:"clat_ns"`
	Lat       fioLat  `json:"lat_ns"`
}

type fioSync struct {
	TotalIOs int64  `json:"total_ios"`
	Lat      fioLat `json:"lat_ns"`
}

type fioLat struct {
	Min        float64            `json:"min"`
	Max        float64            `json:"max"`
	Mean       float64            `json:"mean"`
	N          int64              `json:"N"`
	Percentile map[string]float64 `json:"percentile"`
}

// percentile finds quantile q (in percent, e.g. 99.9) among fio's keys
// ("99.900000"), in ns; ok is false when fio did not report it.
func (l fioLat) percentile(q float64) (float64, bool) {
	for k, v := range l.Percentile {
		f, err := strconv.ParseFloat(k, 64)
		if err == nil && math.Abs(f-q) < 1e-6 {
			return v, true
		}
	}
	return 0, false
}

// LatStats summarises one latency distribution of fio, in microseconds.
// Percentiles come from fio's histogram (bucket resolution about 1.6%);
// a zero means fio reported none.
type LatStats struct {
	N      int64   `json:"n"`
	MinUS  float64 `json:"min_us"`
	MeanUS float64 `json:"mean_us"`
	MaxUS  float64 `json:"max_us"`
	P50US  float64 `json:"p50_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p99_9_us"`
}

func latStats(l fioLat) *LatStats {
	if l.N == 0 {
		return nil
	}
	us := func(ns float64) float64 { return ns / 1e3 }
	s := &LatStats{N: l.N, MinUS: us(l.Min), MeanUS: us(l.Mean), MaxUS: us(l.Max)}
	if v, ok := l.percentile(50); ok {
		s.P50US = us(v)
	}
	if v, ok := l.percentile(99); ok {
		s.P99US = us(v)
	}
	if v, ok := l.percentile(99.9); ok {
		s.P999US = us(v)
	}
	return s
}

// Measurement is what the report uses from one fio job.
type Measurement struct {
	// Write is fio's completion latency (submission to completion) of
	// the writes; WriteTotalMeanUS adds the submission time, on average.
	Write            *LatStats `json:"write_clat,omitempty"`
	WriteTotalMeanUS float64   `json:"write_lat_mean_us,omitempty"`
	// Sync is the latency of the flushes (fio's "sync" section).
	Sync *LatStats `json:"sync_lat,omitempty"`
	// IOPS counts writes per second; with a flush after every write it
	// is the number of write+flush pairs per second.
	IOPS     float64 `json:"write_iops"`
	MBps     float64 `json:"write_mb_per_s"` // 10^6 bytes
	Writes   int64   `json:"writes"`
	Syncs    int64   `json:"syncs,omitempty"`
	RuntimeS float64 `json:"runtime_s"` // measured part, after the ramp
	// ClientCPUPct is fio's own user+system CPU, in percent of one core.
	ClientCPUPct float64 `json:"fio_cpu_pct"`
}

// parseFio reads fio's JSON output, which the nbd engine may precede with
// a line of its own. It returns fio's version, the single job's raw JSON
// and the measurement drawn from it.
func parseFio(data []byte) (string, json.RawMessage, Measurement, error) {
	var m Measurement
	start := bytes.IndexByte(data, '{')
	if start < 0 {
		return "", nil, m, errors.New("no JSON in fio output")
	}
	var out fioOutput
	if err := json.Unmarshal(data[start:], &out); err != nil {
		return "", nil, m, fmt.Errorf("fio JSON: %w", err)
	}
	if len(out.Jobs) != 1 {
		return out.Version, nil, m, fmt.Errorf("fio JSON holds %d jobs, want 1", len(out.Jobs))
	}
	raw := out.Jobs[0]
	var j fioJob
	if err := json.Unmarshal(raw, &j); err != nil {
		return out.Version, raw, m, fmt.Errorf("fio job JSON: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err == nil {
		raw = compact.Bytes()
	}
	m = Measurement{
		Write:        latStats(j.Write.Clat),
		Sync:         latStats(j.Sync.Lat),
		IOPS:         j.Write.IOPS,
		MBps:         j.Write.BWBytes / 1e6,
		Writes:       j.Write.TotalIOs,
		Syncs:        max(j.Sync.TotalIOs, j.Sync.Lat.N), // libaio leaves total_ios at 0
		RuntimeS:     float64(j.Write.RuntimeMS) / 1e3,
		ClientCPUPct: j.UsrCPU + j.SysCPU,
	}
	if j.Write.Lat.N > 0 {
		m.WriteTotalMeanUS = j.Write.Lat.Mean / 1e3
	}
	if j.Error != 0 {
		return out.Version, raw, m, fmt.Errorf("fio job %q reported error %d: %w", j.Name, j.Error, syscall.Errno(j.Error))
	}
	if j.Write.TotalIOs == 0 {
		return out.Version, raw, m, fmt.Errorf("fio job %q completed no writes", j.Name)
	}
	return out.Version, raw, m, nil
}

// fioRun is the outcome of one fio process.
type fioRun struct {
	argv    []string // the command line, timeout included
	version string
	raw     json.RawMessage
	m       Measurement
	output  string // fio's stdout and stderr (not the JSON)
	wall    time.Duration
}

// runFioIn runs fio with args under `timeout -s KILL bound` (fio's nbd
// engine can spin forever when its server dies) in its own process group,
// killed with it when ctx ends, inside network namespace ns ("": the
// host's). The JSON goes to jsonPath.
func runFioIn(ctx context.Context, ns string, args []string, jsonPath string, bound time.Duration) (fioRun, error) {
	return runFioWrapped(ctx, ns, nil, args, jsonPath, bound)
}

// runFioWrapped is runFioIn with fio started through the command wrap
// (a prefix of the argv, such as a private mount namespace).
func runFioWrapped(ctx context.Context, ns string, wrap, args []string, jsonPath string, bound time.Duration) (fioRun, error) {
	var r fioRun
	_ = os.Remove(jsonPath)
	r.argv = append([]string{"timeout", "-s", "KILL", strconv.Itoa(int(math.Ceil(bound.Seconds()))), "fio"}, args...)
	r.argv = append(slices.Clone(wrap), r.argv...)
	if ns != "" {
		r.argv = append([]string{"ip", "netns", "exec", ns}, r.argv...)
	}
	cmd := exec.CommandContext(ctx, r.argv[0], r.argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r.wall = time.Since(start)
	r.output = strings.TrimSpace(out.String())
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 137 {
			err = fmt.Errorf("killed after %s by timeout -s KILL: %w", bound, err)
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("fio: %w", ctx.Err())
		}
		return r, fmt.Errorf("fio: %w; output: %s", err, benchkit.Truncate(r.output, 2000))
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return r, fmt.Errorf("fio output: %w", err)
	}
	r.version, r.raw, r.m, err = parseFio(data)
	if err != nil {
		return r, fmt.Errorf("%w; fio said: %s", err, benchkit.Truncate(r.output, 2000))
	}
	return r, nil
}
