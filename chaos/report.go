package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Summary is the report of a run of schedules (bench/results/chaos.{md,json}).
type Summary struct {
	Profile     string       `json:"profile"`
	FirstSeed   uint64       `json:"first_seed"`
	Schedules   int          `json:"schedules"`
	Injected    map[Kind]int `json:"faults_injected"`
	Ops         int          `json:"ops"`
	AckedWrites int          `json:"acked_writes_checked"`
	Reads       int          `json:"reads_checked"`
	// Refused counts operator actions the cluster refused under faults
	// (no quorum, replica not UpToDate): expected, not anomalies.
	Refused   int `json:"operator_actions_refused"`
	Anomalies int `json:"anomalies"`
	// DiskHits is the operations the fault disks failed or delayed, plus
	// power losses (0 without fault disks).
	DiskHits int `json:"disk_hits"`
	// DelayedPackets is the backend packets the delay faults held.
	DelayedPackets uint64 `json:"delayed_packets,omitempty"`
	// FollowerMoves is the follower clients' moves to a new primary
	// (Result.FollowerMoves): whether the single-writer checker had
	// writes at two epochs to compare.
	FollowerMoves int `json:"follower_moves,omitempty"`
	Harness       int `json:"harness_errors"`
	// With VMs: libvirt samples, guest heartbeats received, QEMUs the
	// harness's watchdog killed.
	VMSamples     int           `json:"vm_samples,omitempty"`
	GuestBeats    int           `json:"guest_datagrams,omitempty"`
	WatchdogKills int           `json:"watchdog_kills,omitempty"`
	VMGivenUp     int           `json:"vm_restart_given_up,omitempty"`
	Wall          time.Duration `json:"wall_ns"`
	WallText      string        `json:"wall"`
	// Segments are the runs merged into this report (Merge), oldest
	// first: a long run spans several sittings (make chaos APPEND=1).
	Segments []Segment `json:"segments,omitempty"`
	Results  []*Result `json:"results"`
}

// Segment is one run of schedules merged into a report: its seeds, the
// tandem it ran (git describe), when, and what it found.
type Segment struct {
	Seeds     string        `json:"seeds"`
	Schedules int           `json:"schedules"`
	Anomalies int           `json:"anomalies"`
	Commit    string        `json:"commit"`
	Date      string        `json:"date"`
	VMs       int           `json:"vms"`
	Disk      bool          `json:"fault_disks"`
	Wall      time.Duration `json:"wall_ns"`
}

// LoadSummary reads prefix.json, as Write stores it.
func LoadSummary(prefix string) (*Summary, error) {
	data, err := os.ReadFile(prefix + ".json")
	if err != nil {
		return nil, err
	}
	s, err := ParseSummary(data)
	if err != nil {
		return nil, fmt.Errorf("%s.json: %w", prefix, err)
	}
	return s, nil
}

// ParseSummary decodes a report as Write stores it in prefix.json.
func ParseSummary(data []byte) (*Summary, error) {
	var s Summary
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Merge adds the schedules of next, a later run of the same profile, to
// s. A seed already in s is refused: a report counts each schedule once.
// A report without segments (from before they existed) becomes one.
func (s *Summary) Merge(next *Summary) error {
	if next.Profile != s.Profile {
		return fmt.Errorf("cannot merge a %s-profile run into a %s-profile report", next.Profile, s.Profile)
	}
	seen := map[uint64]bool{}
	for _, r := range s.Results {
		seen[r.Seed] = true
	}
	for _, r := range next.Results {
		if seen[r.Seed] {
			return fmt.Errorf("seed %d is in the report already: run other seeds (SEED=%d or later)", r.Seed, s.maxSeed()+1)
		}
	}
	if len(s.Segments) == 0 && s.Schedules > 0 {
		s.Segments = []Segment{{Seeds: seedRange(s.Results), Schedules: s.Schedules, Anomalies: s.Anomalies, Commit: "(not recorded)", Wall: s.Wall}}
	}
	wall, segs := s.Wall+next.Wall, append(s.Segments, next.Segments...)
	for _, r := range next.Results {
		s.Add(r)
	}
	s.Wall, s.Segments = wall, segs
	s.FirstSeed = min(s.FirstSeed, next.FirstSeed)
	return nil
}

func (s *Summary) maxSeed() uint64 {
	var m uint64
	for _, r := range s.Results {
		m = max(m, r.Seed)
	}
	return m
}

// seedRange describes the seeds of rs: "1000..1199", or a list when they
// are not consecutive.
func seedRange(rs []*Result) string {
	if len(rs) == 0 {
		return "-"
	}
	seeds := make([]uint64, 0, len(rs))
	for _, r := range rs {
		seeds = append(seeds, r.Seed)
	}
	slices.Sort(seeds)
	if seeds[len(seeds)-1]-seeds[0] == uint64(len(seeds)-1) {
		return fmt.Sprintf("%d..%d", seeds[0], seeds[len(seeds)-1])
	}
	parts := make([]string, len(seeds))
	for i, sd := range seeds {
		parts[i] = fmt.Sprint(sd)
	}
	return strings.Join(parts, ",")
}

// Add counts one schedule's result.
func (s *Summary) Add(r *Result) {
	if s.Injected == nil {
		s.Injected = map[Kind]int{}
	}
	s.Schedules++
	for k, n := range r.Injected {
		s.Injected[k] += n
	}
	s.Ops += r.Ops
	s.AckedWrites += r.AckedWrites
	s.Reads += r.ReadsChecked
	s.Refused += r.OperatorRefused
	s.Anomalies += len(r.Anomalies)
	s.Harness += len(r.HarnessErrors)
	s.DiskHits += r.DiskHits
	s.DelayedPackets += r.DelayedPackets
	s.FollowerMoves += r.FollowerMoves
	s.VMSamples += r.VMSamples
	s.GuestBeats += r.GuestBeats
	s.WatchdogKills += r.WatchdogKills
	s.VMGivenUp += r.VMGivenUp
	s.Results = append(s.Results, r)
}

// meanPhases averages the phases of the results that have them (older
// reports do not).
func (s *Summary) meanPhases() (Phases, int) {
	var sum Phases
	n := 0
	for _, r := range s.Results {
		if p := r.Phases; p != nil {
			sum.Setup += p.Setup
			sum.Faults += p.Faults
			sum.Check += p.Check
			sum.Delete += p.Delete
			n++
		}
	}
	if n == 0 {
		return sum, 0
	}
	d := time.Duration(n)
	return Phases{Setup: sum.Setup / d, Faults: sum.Faults / d, Check: sum.Check / d, Delete: sum.Delete / d}, n
}

// Markdown renders the summary.
func (s *Summary) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault-schedule run (%s profile)\n\n", s.Profile)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| schedules | %d (seeds %s) |\n", s.Schedules, seedRange(s.Results))
	fmt.Fprintf(&b, "| operations | %d |\n| acknowledged writes checked | %d |\n| reads checked | %d |\n", s.Ops, s.AckedWrites, s.Reads)
	fmt.Fprintf(&b, "| operator actions refused under faults | %d |\n", s.Refused)
	if s.DiskHits > 0 {
		fmt.Fprintf(&b, "| disk operations failed or delayed, and power losses (internal/faultfs) | %d |\n", s.DiskHits)
	}
	if s.DelayedPackets > 0 {
		fmt.Fprintf(&b, "| backend packets held by the delay faults (internal/netdelay) | %d |\n", s.DelayedPackets)
	}
	if s.FollowerMoves > 0 {
		fmt.Fprintf(&b, "| follower clients' moves to a new primary (single-writer checker) | %d |\n", s.FollowerMoves)
	}
	if s.VMSamples > 0 {
		fmt.Fprintf(&b, "| VM: libvirt domain samples / guest heartbeats / QEMUs killed by the harness's watchdog / restarts given up (vm-restart-given-up, started by the runner) | %d / %d / %d / %d |\n",
			s.VMSamples, s.GuestBeats, s.WatchdogKills, s.VMGivenUp)
	}
	fmt.Fprintf(&b, "| anomalies | %d |\n| harness errors | %d |\n| wall time | %s |\n", s.Anomalies, s.Harness, s.Wall.Round(time.Second))
	if ph, n := s.meanPhases(); n > 0 {
		fmt.Fprintf(&b, "| mean schedule: setup / faults and heal / checks / delete (%d schedules timed) | %s / %s / %s / %s |\n", n,
			ph.Setup.Round(100*time.Millisecond), ph.Faults.Round(100*time.Millisecond), ph.Check.Round(100*time.Millisecond), ph.Delete.Round(100*time.Millisecond))
	}
	b.WriteString("\n")
	if len(s.Segments) > 1 {
		fmt.Fprintf(&b, "## Runs merged into this report\n\n| seeds | schedules | anomalies | tandem | date | VMs | fault disks | wall time |\n|---|---|---|---|---|---|---|---|\n")
		for _, g := range s.Segments {
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %d | %v | %s |\n", g.Seeds, g.Schedules, g.Anomalies, g.Commit, g.Date, g.VMs, g.Disk, g.Wall.Round(time.Second))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## Faults injected\n\nCounted when applied (a kill of a tandemd already down, a refused\noperator action are not).\n\n| kind | count |\n|---|---|\n")
	for _, k := range AllKinds {
		if n := s.Injected[k]; n > 0 {
			fmt.Fprintf(&b, "| %s | %d |\n", k, n)
		}
	}
	if s.Anomalies > 0 || s.Harness > 0 {
		fmt.Fprintf(&b, "\n## Anomalies\n\n")
		for _, r := range s.Results {
			if len(r.Anomalies) == 0 && len(r.HarnessErrors) == 0 {
				continue
			}
			fmt.Fprintf(&b, "- seed %d — replay: `%s`\n  - schedule: `%s`\n", r.Seed, r.Replay, r.Schedule)
			for _, a := range r.Anomalies {
				fmt.Fprintf(&b, "  - %s\n", a)
			}
			for _, h := range r.HarnessErrors {
				fmt.Fprintf(&b, "  - harness: %s\n", h)
			}
		}
	}
	return b.String()
}

// Write stores the summary as prefix.md and prefix.json.
func (s *Summary) Write(prefix string) error {
	s.WallText = s.Wall.Round(time.Second).String()
	if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	// Rewritten after every schedule of a long run: a stop in the middle
	// of a write must leave the previous report, not half of one.
	if err := writeFileAtomic(prefix+".json", append(js, '\n')); err != nil {
		return err
	}
	return writeFileAtomic(prefix+".md", []byte(s.Markdown()))
}

// writeFileAtomic replaces name with data through a temporary file and a
// rename.
func writeFileAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}
