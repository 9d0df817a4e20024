package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
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
)

// Job IDs, in the order they run and are reported.
const (
	JobDurable = "qd1-write-flush"
	JobQD1     = "qd1-write"
	JobQD32    = "qd32-write"
	JobSeq     = "seq-1m"
	JobPrefill = "prefill"
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

// FioJobs are the measured jobs of the data-path benchmarks, in the order
// they run and are reported.
func FioJobs() []JobSpec {
	return []JobSpec{
		{ID: JobDurable, Title: "4K random write, QD1, each write followed by a flush (--fsync=1)", RW: "randwrite", BlockSize: "4k", IODepth: 1, SyncEvery: 1, TimeBased: true},
		{ID: JobQD1, Title: "4K random write, QD1, no flush", RW: "randwrite", BlockSize: "4k", IODepth: 1, TimeBased: true},
		{ID: JobQD32, Title: "4K random write, QD32, no flush", RW: "randwrite", BlockSize: "4k", IODepth: 32, TimeBased: true},
		{ID: JobSeq, Title: "1M sequential write, QD4, no flush", RW: "write", BlockSize: "1M", IODepth: 4, Throughput: true, TimeBased: true},
	}
}

// PrefillJob writes a target once from end to end before the measured
// jobs, so that none of them pays for first writes.
func PrefillJob() JobSpec {
	return JobSpec{ID: JobPrefill, Title: "prefill: one sequential 1M write pass over the whole size, QD4", RW: "write", BlockSize: "1M", IODepth: 4, Throughput: true}
}

// FioParams are the run-wide fio settings.
type FioParams struct {
	Size    int64
	Runtime time.Duration
	Ramp    time.Duration
}

// Flags registers -size (default size; sizeHelp says what it sizes),
// -runtime and -ramp on fs, filling p; Check them once fs is parsed.
func (p *FioParams) Flags(fs *flag.FlagSet, size int64, sizeHelp string) {
	p.Size = size
	fs.Var((*sizeValue)(&p.Size), "size", sizeHelp+" (1024-based units: M, G)")
	fs.DurationVar(&p.Runtime, "runtime", 10*time.Second, "measured time of each fio job")
	fs.DurationVar(&p.Ramp, "ramp", 2*time.Second, "unmeasured ramp before each fio job")
}

// Check refuses a size that is not a positive multiple of 1 MiB, a runtime
// under a second and a negative ramp.
func (p FioParams) Check() error {
	switch {
	case p.Size <= 0 || p.Size%(1<<20) != 0:
		return fmt.Errorf("-size %d: must be a positive multiple of 1 MiB", p.Size)
	case p.Runtime < time.Second:
		return errors.New("-runtime must be at least 1s")
	case p.Ramp < 0:
		return errors.New("-ramp must not be negative")
	}
	return nil
}

// sizeValue is a flag.Value of a byte count read by ParseSize.
type sizeValue int64

func (v *sizeValue) String() string { return FmtBytes(int64(*v)) }

func (v *sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

// FioArgs builds the fio command line (without the fio binary) for one job
// on one target. engine holds the target's --ioengine and its options.
func FioArgs(j JobSpec, p FioParams, engine []string, syncOpt, output string) []string {
	args := []string{
		"--name=" + j.ID,
		"--rw=" + j.RW,
		"--bs=" + j.BlockSize,
		"--iodepth=" + strconv.Itoa(j.IODepth),
		"--size=" + strconv.FormatInt(p.Size, 10),
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
		args = append(args, "--time_based", "--runtime="+FioDuration(p.Runtime), "--ramp_time="+FioDuration(p.Ramp))
	}
	return args
}

// FioDuration renders d in fio's time syntax (milliseconds suffix).
func FioDuration(d time.Duration) string {
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

// ParseFio reads fio's JSON output, which the nbd engine may precede with
// a line of its own. It returns fio's version, the single job's raw JSON
// and the measurement drawn from it.
func ParseFio(data []byte) (string, json.RawMessage, Measurement, error) {
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

// FioRun is the outcome of one fio process.
type FioRun struct {
	Argv    []string // the command line, timeout included
	Version string
	Raw     json.RawMessage // fio's JSON summary of the job, compacted
	M       Measurement
	Output  string // fio's stdout and stderr (not the JSON)
	Wall    time.Duration
}

// RunFioIn runs fio with args under `timeout -s KILL bound` (fio's nbd
// engine can spin forever when its server dies) in its own process group,
// killed with it when ctx ends, inside network namespace ns ("": the
// host's). The JSON goes to jsonPath.
func RunFioIn(ctx context.Context, ns string, args []string, jsonPath string, bound time.Duration) (FioRun, error) {
	return RunFioWrapped(ctx, ns, nil, args, jsonPath, bound)
}

// RunFioWrapped is RunFioIn with fio started through the command wrap
// (a prefix of the argv, such as a private mount namespace).
func RunFioWrapped(ctx context.Context, ns string, wrap, args []string, jsonPath string, bound time.Duration) (FioRun, error) {
	var r FioRun
	_ = os.Remove(jsonPath)
	r.Argv = append([]string{"timeout", "-s", "KILL", strconv.Itoa(int(math.Ceil(bound.Seconds()))), "fio"}, args...)
	r.Argv = append(slices.Clone(wrap), r.Argv...)
	if ns != "" {
		r.Argv = append([]string{"ip", "netns", "exec", ns}, r.Argv...)
	}
	cmd := exec.CommandContext(ctx, r.Argv[0], r.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r.Wall = time.Since(start)
	r.Output = strings.TrimSpace(out.String())
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 137 {
			err = fmt.Errorf("killed after %s by timeout -s KILL: %w", bound, err)
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("fio: %w", ctx.Err())
		}
		return r, fmt.Errorf("fio: %w; output: %s", err, Truncate(r.Output, 2000))
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return r, fmt.Errorf("fio output: %w", err)
	}
	r.Version, r.Raw, r.M, err = ParseFio(data)
	if err != nil {
		return r, fmt.Errorf("%w; fio said: %s", err, Truncate(r.Output, 2000))
	}
	return r, nil
}

// Headline picks a measurement's key latency and rate for job.
func Headline(job string, m *Measurement) (latMetric string, lat float64, rateMetric string, rate float64) {
	if m == nil {
		return "", 0, "", 0
	}
	switch job {
	case JobDurable:
		if m.Write != nil && m.Sync != nil && m.Write.P50US > 0 && m.Sync.P50US > 0 {
			lat = m.Write.P50US + m.Sync.P50US
		}
		return "write+flush p50 (write p50 + flush p50)", lat, "pairs/s", m.IOPS
	case JobSeq, JobPrefill:
		if m.Write != nil {
			lat = m.Write.P50US
		}
		return "write p50", lat, "MB/s", m.MBps
	default:
		if m.Write != nil {
			lat = m.Write.P50US
		}
		return "write p50", lat, "IOPS", m.IOPS
	}
}

// Ratio is a/b, nil when either is missing.
func Ratio(a, b float64) *float64 {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return nil
	}
	r := a / b
	return &r
}

// FmtUS formats a latency in µs for a table: one decimal below 100, an
// en dash for none.
func FmtUS(v float64) string {
	switch {
	case v <= 0 || math.IsNaN(v):
		return "–"
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// FmtRate formats a rate as FmtUS does a latency.
func FmtRate(v float64) string { return FmtUS(v) }

// FmtRatio formats a ratio as "1.23×", an en dash for none.
func FmtRatio(p *float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f×", *p)
}
