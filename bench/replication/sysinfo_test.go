package main

import (
	"strings"
	"testing"
	"time"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-size", "256M", "-runtime", "3s", "-ramp", "0s", "-keep-logs", "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	if c.fio.Size != 256<<20 || c.fio.Runtime != 3*time.Second || c.fio.Ramp != 0 || c.logs != "/tmp/x" || c.Out != "bench/results" {
		t.Errorf("config %+v", c)
	}
	for _, args := range [][]string{{"-size", "1000000"}, {"-runtime", "0s"}, {"-ramp", "-1s"}, {"extra"}, {"-trace"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command may contain spaces and parentheses; utime 250 and
	// stime 150 ticks are fields 14 and 15.
	stat := "1234 (tan) d (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 12 0 500 1000 200 18446744073709551615"
	st, err := parseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if st.cpu != 4*time.Second || st.ppid != 1 {
		t.Errorf("stat = %+v, want cpu 4s ppid 1", st)
	}
	for _, bad := range []string{"", "1234 tandemd S 1", "1 (x) S 1 2 3", "1 (x) S x 1 1 0 -1 0 0 0 0 0 1 1 0"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestOthersCPU(t *testing.T) {
	const self = 100
	before := procSnapshot{
		100: {ppid: 50, cpu: time.Second},     // the benchmark
		101: {ppid: 100, cpu: time.Second},    // tandemd
		102: {ppid: 101, cpu: 0},              // a grandchild
		200: {ppid: 1, cpu: 10 * time.Second}, // someone else's test
		201: {ppid: 200, cpu: time.Second},    // and its child
		300: {ppid: 1, cpu: 5 * time.Second},  // idle daemon
	}
	after := procSnapshot{
		100: {ppid: 50, cpu: 2 * time.Second},
		101: {ppid: 100, cpu: 9 * time.Second},
		102: {ppid: 101, cpu: 3 * time.Second},
		103: {ppid: 102, cpu: time.Second},             // new, ours
		200: {ppid: 1, cpu: 15 * time.Second},          // +5 s
		201: {ppid: 200, cpu: 1500 * time.Millisecond}, // +0.5 s
		202: {ppid: 200, cpu: 2 * time.Second},         // new, not ours: +2 s
		300: {ppid: 1, cpu: 5 * time.Second},
		44:  {ppid: kthreadd, cpu: 4 * time.Second}, // not counted
	}
	pct, top := othersCPU(before, after, self, 10*time.Second)
	if !near(pct, 75) { // 7.5 s over 10 s
		t.Errorf("others = %v%%, want 75%%", pct)
	}
	if len(top) != 3 || top[0].PID != 200 || !near(top[0].Pct, 50) || top[1].PID != 202 || top[2].PID != 201 {
		t.Errorf("top = %+v", top)
	}
	if !after.descends(103, self) || after.descends(202, self) {
		t.Error("descends is wrong")
	}
	if pct, top := othersCPU(before, after, self, 0); pct != 0 || top != nil {
		t.Error("an empty window should give nothing")
	}
}

func TestHostCPU(t *testing.T) {
	a, err := parseHostCPU("cpu  100 10 50 1000 40 5 5 0 7 0")
	if err != nil {
		t.Fatal(err)
	}
	// busy = user+nice+system+irq+softirq+steal; guest is inside user.
	if a.busy != 170 || a.total != 1210 {
		t.Errorf("sample %+v, want busy 170 total 1210", a)
	}
	b, _ := parseHostCPU("cpu  200 10 100 1100 40 5 5 0 0 0")
	if pct, ok := busyPct(a, b); !ok || !near(pct, 60) {
		t.Errorf("busy %v %v, want 60%%", pct, ok)
	}
	if _, ok := busyPct(b, a); ok {
		t.Error("a backwards window should not give a figure")
	}
	if _, err := parseHostCPU("cpu0 1 2 3"); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestMountOf(t *testing.T) {
	mi := strings.Join([]string{
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"23 22 0:21 / /tmpfs rw shared:2 - tmpfs tmpfs rw",
		"24 22 0:22 / /tmp/x rw shared:3 - tmpfs none rw",
	}, "\n")
	for path, want := range map[string]string{"/tmp/tandem-1/ref": "/dev/vda ext4 /", "/tmpfs/a": "tmpfs tmpfs /tmpfs", "/tmp/x": "none tmpfs /tmp/x", "/tmp/xy": "/dev/vda ext4 /"} {
		dev, fs, mp := mountOf(mi, path)
		if got := dev + " " + fs + " " + mp; got != want {
			t.Errorf("mountOf(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestReplicaSummaryAndReady(t *testing.T) {
	up := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	info := &tandemv1.VolumeInfo{State: "ready", Primary: "n1", NbdUnix: "nbd+unix:///r2?socket=/s", Replicas: []*tandemv1.VolumeReplica{
		{Node: "n1", State: up, Primary: true},
		{Node: "n2", State: up, Link: "in-sync"},
	}}
	if got, want := replicaSummary(info), "n1:UpToDate* n2:UpToDate/in-sync"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	// A run with -data-stream plain shows it on the link.
	info.Replicas[1].DataStream = "plain"
	if got, want := replicaSummary(info), "n1:UpToDate* n2:UpToDate/in-sync(plain)"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	info.Replicas[1].DataStream = "tls"
	if got, want := replicaSummary(info), "n1:UpToDate* n2:UpToDate/in-sync"; got != want {
		t.Errorf("summary of a TLS link %q, want %q", got, want)
	}
	tg := &Target{Replicas: 2, Nodes: []string{"n1", "n2"}}
	if err := volumeReady(info, tg); err != nil {
		t.Errorf("ready volume: %v", err)
	}
	info.Replicas[1].State = tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	info.Replicas[1].Link, info.Replicas[1].DirtyBytes = "outdated", 4096
	if err := volumeReady(info, tg); err == nil || !strings.Contains(err.Error(), "n2:Outdated/outdated(4096 dirty)") {
		t.Errorf("outdated replica: %v", err)
	}
	info.Replicas[1].State = up
	info.NbdUnix = ""
	if err := volumeReady(info, tg); err == nil {
		t.Error("a volume without an export is not ready")
	}
	info.NbdUnix, info.Primary = "x", "n2"
	if err := volumeReady(info, tg); err == nil {
		t.Error("wrong primary accepted")
	}
	info.Primary, info.State = "n1", "creating"
	if err := volumeReady(info, tg); err == nil {
		t.Error("creating volume accepted")
	}
}

func TestDiskstats(t *testing.T) {
	stats := " 254       0 vda 748759 43648 24542970 319427 14139836 176910 738963800 2125721 0 748268 2625889 383225 255 757176112 50270 2038571 130469\n" +
		" 254       1 vda1 1 2 3 4 5 6 7 8 9 10 11\n"
	s, err := parseDiskstats(stats, "vda")
	if err != nil {
		t.Fatal(err)
	}
	if s.writes != 14139836 || s.sectors != 738963800 || s.flushes != 2038571 {
		t.Errorf("sample %+v", s)
	}
	if s, err := parseDiskstats(stats, "vda1"); err != nil || s.writes != 5 || s.flushes != 0 {
		t.Errorf("old-format line: %+v, %v", s, err)
	}
	if _, err := parseDiskstats(stats, "sda"); err == nil {
		t.Error("missing device accepted")
	}
	d := diskUse("vda", diskSample{writes: 100, sectors: 0, flushes: 10}, diskSample{writes: 2100, sectors: 16000, flushes: 1010}, 100, 10*time.Second)
	if d == nil || !near(d.WritesPerOp, 2) || !near(d.FlushesPerOp, 1) || !near(d.KiBPerOp, 8) || !near(d.WrittenMB, 8.192) {
		t.Errorf("diskUse = %+v", d)
	}
	if diskUse("vda", diskSample{}, diskSample{writes: 1}, 0, time.Second) != nil {
		t.Error("no ops should give nil")
	}
}
