package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// StorageInfo is the filesystem every target's data lives on.
type StorageInfo struct {
	Dir        string `json:"dir"`
	Device     string `json:"device"`
	FSType     string `json:"fstype"`
	MountPoint string `json:"mount_point"`
	// SameFS is true when every target's file is on Dir's filesystem.
	SameFS bool `json:"same_filesystem"`
}

// procCPU returns the user+system CPU time of pid from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	st, err := parseStat(string(b))
	return st.cpu, err
}

// clockTicks is USER_HZ, which Linux fixes at 100 on every architecture
// Go supports.
const clockTicks = 100

// procStat is what we use of a /proc/<pid>/stat line.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime
}

// parseStat reads the parent (field 4), utime and stime (fields 14 and 15)
// of a /proc/<pid>/stat line; the command before them may contain spaces
// and parentheses.
func parseStat(stat string) (procStat, error) {
	i := strings.LastIndex(stat, ")")
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so ppid (4) is f[1], utime (14) f[11]
	// and stime (15) f[12].
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("malformed /proc stat: %d fields after the command", len(f))
	}
	var v [3]int64
	for k, idx := range []int{1, 11, 12} {
		n, err := strconv.ParseInt(f[idx], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("malformed /proc stat: %w", err)
		}
		v[k] = n
	}
	return procStat{ppid: int(v[0]), cpu: time.Duration(v[1]+v[2]) * time.Second / clockTicks}, nil
}

// procSnapshot is every process's stat at one moment.
type procSnapshot map[int]procStat

func snapshotProcs() procSnapshot {
	out := procSnapshot{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if st, err := parseStat(string(b)); err == nil {
			out[pid] = st
		}
	}
	return out
}

// descends reports whether pid is root or one of its descendants in s.
func (s procSnapshot) descends(pid, root int) bool {
	for range 64 { // bounded: a stale snapshot could hold a cycle
		if pid == root {
			return true
		}
		st, ok := s[pid]
		if !ok || st.ppid <= 1 {
			return false
		}
		pid = st.ppid
	}
	return false
}

// kthreadd is the parent of every kernel thread. Kernel threads (block
// completions, writeback) work for every process, the benchmark's too, so
// they are not counted as other processes.
const kthreadd = 2

// othersCPU is the CPU that processes other than root and its descendants
// used between two snapshots, in percent of one core over window, with the
// busiest of them (above 5% of a core). Processes that started and exited
// between the snapshots are not seen, so this is a lower bound.
func othersCPU(before, after procSnapshot, root int, window time.Duration) (float64, []ProcCPU) {
	if window <= 0 {
		return 0, nil
	}
	var total time.Duration
	var top []ProcCPU
	for pid, a := range after {
		if pid == kthreadd || a.ppid == kthreadd || after.descends(pid, root) || before.descends(pid, root) {
			continue
		}
		d := a.cpu
		if b, ok := before[pid]; ok {
			d -= b.cpu
		}
		if d <= 0 {
			continue
		}
		total += d
		if pct := 100 * d.Seconds() / window.Seconds(); pct >= 5 {
			top = append(top, ProcCPU{PID: pid, Pct: pct})
		}
	}
	slices.SortFunc(top, func(a, b ProcCPU) int {
		switch {
		case a.Pct > b.Pct:
			return -1
		case a.Pct < b.Pct:
			return 1
		}
		return a.PID - b.PID
	})
	return 100 * total.Seconds() / window.Seconds(), top
}

// nameProcs fills in the command lines of the first n processes.
func nameProcs(ps []ProcCPU, n int) []ProcCPU {
	ps = ps[:min(len(ps), n)]
	for i := range ps {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ps[i].PID))
		ps[i].Command = benchkit.Truncate(strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")), 160)
		if ps[i].Command == "" {
			ps[i].Command = "(exited)"
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ps[i].PID)); err == nil {
				ps[i].Command = "[" + strings.TrimSpace(string(comm)) + "]"
			}
		}
	}
	return ps
}

// mountOf finds the mount holding path in /proc/self/mountinfo: the
// longest mount point that is a prefix of it.
func mountOf(mountinfo, path string) (device, fstype, mountPoint string) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := f[4]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(mountPoint) {
			device, fstype, mountPoint = g[1], g[0], mp
		}
	}
	return device, fstype, mountPoint
}

func storageInfo(dir string, files []string) StorageInfo {
	s := StorageInfo{Dir: dir, SameFS: true}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		s.Device, s.FSType, s.MountPoint = mountOf(string(b), dir)
	}
	var want uint64
	if fi, err := os.Stat(dir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			want = st.Dev
		}
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			s.SameFS = false
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Dev != want {
			s.SameFS = false
		}
	}
	return s
}

// cpuSample is the host's CPU time from the first line of /proc/stat, in
// clock ticks summed over all CPUs.
type cpuSample struct{ busy, total int64 }

func hostCPU() (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, fmt.Errorf("host cpu: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseHostCPU(line)
}

// parseHostCPU reads "cpu user nice system idle iowait irq softirq steal
// ...": idle and iowait count as not busy.
func parseHostCPU(line string) (cpuSample, error) {
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuSample{}, fmt.Errorf("malformed /proc/stat line %q", line)
	}
	var s cpuSample
	// guest and guest_nice (fields 9 and 10) are already in user and nice.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return cpuSample{}, fmt.Errorf("malformed /proc/stat line %q: %w", line, err)
		}
		s.total += n
		if i != 3 && i != 4 {
			s.busy += n
		}
	}
	return s, nil
}

// busyPct is the share of all CPUs that was busy between a and b.
func busyPct(a, b cpuSample) (float64, bool) {
	if b.total <= a.total {
		return 0, false
	}
	return 100 * float64(b.busy-a.busy) / float64(b.total-a.total), true
}

// ProcCPU is one process's CPU use over a sampling window.
type ProcCPU struct {
	PID     int     `json:"pid"`
	Command string  `json:"command"`
	Pct     float64 `json:"cpu_pct"` // of one core
}

// HostActivity is what else the host was doing, sampled before the jobs.
type HostActivity struct {
	WindowS float64 `json:"window_s"`
	BusyPct float64 `json:"busy_pct_of_all_cpus"`
	// OthersPct is the CPU of processes that are not the benchmark's, in
	// percent of one core (a lower bound: short-lived ones are missed).
	OthersPct float64   `json:"others_cpu_pct"`
	LoadAvg   string    `json:"loadavg"`
	Top       []ProcCPU `json:"top_processes,omitempty"`
}

// sampleHost measures the host's CPU use over window, and the CPU of the
// processes that are not the benchmark's (root and its descendants).
func sampleHost(ctx context.Context, window time.Duration, root int) (HostActivity, error) {
	h := HostActivity{WindowS: window.Seconds()}
	c0, err := hostCPU()
	if err != nil {
		return h, err
	}
	p0 := snapshotProcs()
	start := time.Now()
	t := time.NewTimer(window)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return h, ctx.Err()
	}
	c1, err := hostCPU()
	if err != nil {
		return h, err
	}
	p1 := snapshotProcs()
	h.BusyPct, _ = busyPct(c0, c1)
	var top []ProcCPU
	h.OthersPct, top = othersCPU(p0, p1, root, time.Since(start))
	h.Top = nameProcs(top, 5)
	h.LoadAvg = benchkit.LoadAvgLine()
	return h, nil
}

// diskSample is a block device's counters from /proc/diskstats.
type diskSample struct {
	writes, sectors, flushes int64
}

// readDisk samples device (e.g. "vda", from "/dev/vda").
func readDisk(device string) (diskSample, error) {
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return diskSample{}, fmt.Errorf("diskstats: %w", err)
	}
	return parseDiskstats(string(b), strings.TrimPrefix(device, "/dev/"))
}

// parseDiskstats finds name's line: writes completed is field 8, sectors
// written field 10 and flushes completed field 19 (kernels since 5.5).
func parseDiskstats(stats, name string) (diskSample, error) {
	for _, line := range strings.Split(stats, "\n") {
		f := strings.Fields(line)
		if len(f) < 14 || f[2] != name {
			continue
		}
		var s diskSample
		var err error
		if s.writes, err = strconv.ParseInt(f[7], 10, 64); err != nil {
			return s, fmt.Errorf("diskstats %s: %w", name, err)
		}
		if s.sectors, err = strconv.ParseInt(f[9], 10, 64); err != nil {
			return s, fmt.Errorf("diskstats %s: %w", name, err)
		}
		if len(f) >= 19 {
			if s.flushes, err = strconv.ParseInt(f[18], 10, 64); err != nil {
				return s, fmt.Errorf("diskstats %s: %w", name, err)
			}
		}
		return s, nil
	}
	return diskSample{}, fmt.Errorf("diskstats: no device %q", name)
}

// DiskUse is the device traffic during one fio run, per operation fio
// completed (per write+flush pair in the durable job). It counts the whole
// run, ramp and start-up included, against the measured rate over the
// same time, so it is approximate; other processes' traffic is included.
type DiskUse struct {
	Device       string  `json:"device"`
	Writes       int64   `json:"device_writes"`
	WrittenMB    float64 `json:"device_written_mb"`
	Flushes      int64   `json:"device_flushes"`
	WritesPerOp  float64 `json:"device_writes_per_op"`
	KiBPerOp     float64 `json:"device_kib_per_op"`
	FlushesPerOp float64 `json:"device_flushes_per_op"`
	EstimatedOps float64 `json:"estimated_ops"`
}

// diskUse relates two samples to opsPerS operations per second over wall.
func diskUse(device string, a, b diskSample, opsPerS float64, wall time.Duration) *DiskUse {
	if b.writes < a.writes || opsPerS <= 0 || wall <= 0 {
		return nil
	}
	ops := opsPerS * wall.Seconds()
	d := &DiskUse{Device: device, Writes: b.writes - a.writes, Flushes: b.flushes - a.flushes, EstimatedOps: ops}
	bytes := float64(b.sectors-a.sectors) * 512
	d.WrittenMB = bytes / 1e6
	d.WritesPerOp, d.KiBPerOp, d.FlushesPerOp = float64(d.Writes)/ops, bytes/1024/ops, float64(d.Flushes)/ops
	return d
}
