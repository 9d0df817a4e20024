package benchkit

import (
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6*math.Max(1, math.Abs(b)) }

func TestParseFioNBD(t *testing.T) {
	// The nbd engine prints "fio: connected to NBD server" before the JSON.
	data := readTestdata(t, "fio-nbd-fsync.json")
	if !strings.HasPrefix(string(data), "fio: connected") {
		t.Fatal("testdata no longer starts with the nbd engine's line")
	}
	ver, raw, m, err := ParseFio(data)
	if err != nil {
		t.Fatal(err)
	}
	if ver != "fio-3.33" {
		t.Errorf("version %q", ver)
	}
	if len(raw) == 0 || strings.ContainsAny(string(raw), "\n") {
		t.Errorf("raw job JSON should be compact and non-empty, got %d bytes", len(raw))
	}
	if m.Write == nil || m.Sync == nil {
		t.Fatalf("write %v sync %v, want both", m.Write, m.Sync)
	}
	checks := []struct {
		name      string
		got, want float64
	}{
		{"write p50", m.Write.P50US, 97.792},
		{"write p99", m.Write.P99US, 173.056},
		{"write p99.9", m.Write.P999US, 296.960},
		{"sync p50", m.Sync.P50US, 193.536},
		{"sync p99", m.Sync.P99US, 305.152},
		{"iops", m.IOPS, 3595.404595},
		{"MB/s", m.MBps, 14.726777},
		{"runtime", m.RuntimeS, 1.001},
		{"fio cpu", m.ClientCPUPct, 2.3 + 2.8},
		{"write lat mean", m.WriteTotalMeanUS, 103.465557655},
	}
	for _, c := range checks {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if m.Writes != 3599 || m.Syncs != 3599 {
		t.Errorf("writes %d syncs %d, want 3599 each", m.Writes, m.Syncs)
	}
}

func TestParseFioLibaioSyncCount(t *testing.T) {
	// libaio reports total_ios 0 in the sync section but counts the
	// flushes in lat_ns.N.
	_, _, m, err := ParseFio(readTestdata(t, "fio-libaio-fdatasync.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sync == nil || m.Syncs == 0 || m.Syncs != m.Sync.N {
		t.Fatalf("syncs %d, sync stats %+v", m.Syncs, m.Sync)
	}
	if !near(m.Write.P50US, 44.288) || !near(m.Sync.P50US, 211.968) {
		t.Errorf("write p50 %v sync p50 %v", m.Write.P50US, m.Sync.P50US)
	}
}

func TestParseFioErrors(t *testing.T) {
	good := string(readTestdata(t, "fio-nbd-fsync.json"))
	for _, c := range []struct {
		name, data, want string
	}{
		{"empty", "", "no JSON"},
		{"garbage", "fio: engine nbd not loadable\n", "no JSON"},
		{"truncated", good[:len(good)/2], "fio JSON"},
		{"no jobs", `{"fio version":"fio-3.33","jobs":[]}`, "0 jobs"},
		{"job error", strings.Replace(good, `"error" : 0`, `"error" : 5`, 1), "reported error 5"},
		{"no writes", `{"jobs":[{"jobname":"x","error":0,"write":{"total_ios":0}}]}`, "no writes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := ParseFio([]byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestPercentileLookup(t *testing.T) {
	l := fioLat{N: 3, Percentile: map[string]float64{"50.000000": 1000, "99.000000": 2000, "99.900000": 3000}}
	for q, want := range map[float64]float64{50: 1000, 99: 2000, 99.9: 3000} {
		if v, ok := l.percentile(q); !ok || v != want {
			t.Errorf("p%v = %v, %v; want %v", q, v, ok, want)
		}
	}
	if _, ok := l.percentile(99.99); ok {
		t.Error("p99.99 should be missing")
	}
	s := latStats(fioLat{N: 1, Mean: 1500, Percentile: map[string]float64{"50.000000": 1000}})
	if s.P50US != 1 || s.P99US != 0 || s.MeanUS != 1.5 {
		t.Errorf("latStats = %+v", s)
	}
	if latStats(fioLat{}) != nil {
		t.Error("no samples should give nil stats")
	}
}

func TestFioArgs(t *testing.T) {
	p := FioParams{Size: 1 << 30, Runtime: 10 * time.Second, Ramp: 2 * time.Second}
	engine := []string{"--ioengine=nbd", "--uri=nbd+unix:///r2?socket=/x/nbd.sock"}
	jobs := FioJobs()
	durable := jobs[slices.IndexFunc(jobs, func(j JobSpec) bool { return j.ID == JobDurable })]

	args := FioArgs(durable, p, engine, "fsync", "/tmp/o.json")
	for _, want := range []string{"--name=qd1-write-flush", "--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=1073741824",
		"--randrepeat=0", "--norandommap", "--output-format=json", "--output=/tmp/o.json", "--fsync=1",
		"--time_based", "--runtime=10000ms", "--ramp_time=2000ms", engine[0], engine[1]} {
		if !slices.Contains(args, want) {
			t.Errorf("durable args lack %q: %q", want, args)
		}
	}
	if args := FioArgs(durable, p, engine, "fdatasync", "o"); !slices.Contains(args, "--fdatasync=1") || slices.Contains(args, "--fsync=1") {
		t.Errorf("fdatasync variant: %q", args)
	}
	if args := FioArgs(durable, p, engine, "", "o"); !slices.Contains(args, "--fsync=1") {
		t.Errorf("default sync option should be fsync: %q", args)
	}
	qd32 := jobs[slices.IndexFunc(jobs, func(j JobSpec) bool { return j.ID == JobQD32 })]
	args = FioArgs(qd32, p, engine, "fsync", "o")
	if !slices.Contains(args, "--iodepth=32") || slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "sync=") }) {
		t.Errorf("qd32 args: %q", args)
	}
	args = FioArgs(PrefillJob(), p, engine, "fsync", "o")
	if slices.Contains(args, "--time_based") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--runtime") }) {
		t.Errorf("prefill must write the whole size once, not be time based: %q", args)
	}
	if !slices.Contains(args, "--rw=write") || !slices.Contains(args, "--bs=1M") {
		t.Errorf("prefill args: %q", args)
	}
}

func TestFioDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{10 * time.Second: "10000ms", 1500 * time.Millisecond: "1500ms", 0: "0ms"} {
		if got := FioDuration(d); got != want {
			t.Errorf("FioDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRatio(t *testing.T) {
	if r := Ratio(3, 2); r == nil || *r != 1.5 {
		t.Errorf("Ratio(3,2) = %v", r)
	}
	for _, c := range [][2]float64{{0, 1}, {1, 0}, {-1, 2}} {
		if r := Ratio(c[0], c[1]); r != nil {
			t.Errorf("Ratio(%v) = %v, want nil", c, *r)
		}
	}
}

func TestHeadline(t *testing.T) {
	m := &Measurement{Write: &LatStats{P50US: 70}, Sync: &LatStats{P50US: 100}, IOPS: 5000, MBps: 20}
	if _, lat, metric, rate := Headline(JobDurable, m); lat != 170 || metric != "pairs/s" || rate != 5000 {
		t.Errorf("durable Headline: %v %q %v", lat, metric, rate)
	}
	if _, lat, metric, rate := Headline(JobSeq, m); lat != 70 || metric != "MB/s" || rate != 20 {
		t.Errorf("seq Headline: %v %q %v", lat, metric, rate)
	}
	if _, lat, metric, rate := Headline(JobQD32, m); lat != 70 || metric != "IOPS" || rate != 5000 {
		t.Errorf("qd32 Headline: %v %q %v", lat, metric, rate)
	}
	// Without a flush percentile there is no pair latency.
	if _, lat, _, _ := Headline(JobDurable, &Measurement{Write: &LatStats{P50US: 70}}); lat != 0 {
		t.Errorf("durable without sync: lat %v, want 0", lat)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1G": 1 << 30, "1GiB": 1 << 30, "1gb": 1 << 30, "512M": 512 << 20, "4096": 4096, " 2 G ": 2 << 30, "1T": 1 << 40, "8K": 8 << 10} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "1.5G", "1X", "-1G", "99999999999T"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
