package chaos

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fixedTail is how long the workload of a hand-written schedule without a
// length runs on after its last fault healed: long enough to see the
// cluster take writes again before the checkers.
const fixedTail = 2 * time.Second

// ParseSchedule reads a schedule written as Schedule.String prints it,
//
//	seed=1 profile=ci length=5s faults=[isolate(n1)@2.00s+20.00s resync(v0,n2)@3.10s]
//
// or only its faults, separated by spaces:
//
//	isolate(primary(v0))@2s+22s kill-tandemd(n2)@30s+3s
//
// Each fault is KIND(ARGS)@START for the instant kinds and
// KIND(ARGS)@START+DURATION for the others, START and DURATION as Go
// durations; ARGS are what Fault.String prints. Where a fault names one
// node (isolate, pause, power-off, kill-tandemd, bandwidth, maintenance,
// loss, delay, the sender of a one-way), "primary(v0)" may stand for it:
// the primary of that volume when the fault is applied (NodeIsPrimary).
// Faults are ordered by start time and numbered from 1, as Generate does.
// Without a length, it is the last heal plus fixedTail; without a seed, 0
// (the caller decides; TestChaosSchedules uses CHAOS_SEED or 1).
// ParseSchedule checks the syntax and the values' own ranges; whether a
// runner has those nodes, volumes and kinds is Schedule.Check's.
func ParseSchedule(text string) (Schedule, error) {
	var s Schedule
	list := strings.TrimSpace(text)
	header, rest, full := strings.Cut(list, "faults=[")
	hasLength := false
	if full {
		if !strings.HasSuffix(rest, "]") {
			return Schedule{}, errors.New("chaos: schedule: faults=[ is not closed by a final ]")
		}
		list = strings.TrimSuffix(rest, "]")
		for _, field := range strings.Fields(header) {
			key, val, ok := strings.Cut(field, "=")
			if !ok {
				return Schedule{}, fmt.Errorf("chaos: schedule: %q: want key=value (seed, profile, length) before faults=[...]", field)
			}
			var err error
			switch key {
			case "seed":
				s.Seed, err = strconv.ParseUint(val, 10, 64)
			case "profile":
				s.Profile = val
			case "length":
				s.Length, err = time.ParseDuration(val)
				if err == nil && s.Length < 0 {
					err = errors.New("negative")
				}
				hasLength = true
			default:
				err = errors.New("unknown key (want seed, profile or length)")
			}
			if err != nil {
				return Schedule{}, fmt.Errorf("chaos: schedule: %s: %w", field, err)
			}
		}
	} else if list == "" {
		return Schedule{}, errors.New("chaos: schedule: empty (want faults such as isolate(n1)@2s+20s)")
	}
	for i, tok := range strings.Fields(list) {
		f, err := ParseFault(tok)
		if err != nil {
			return Schedule{}, fmt.Errorf("chaos: schedule: fault %d: %w", i+1, err)
		}
		s.Faults = append(s.Faults, f)
	}
	slices.SortStableFunc(s.Faults, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
	var last time.Duration
	for i := range s.Faults {
		s.Faults[i].ID = i + 1
		last = max(last, s.Faults[i].End())
	}
	if !hasLength {
		s.Length = last + fixedTail
	}
	return s, nil
}

// ParseFault reads one fault as Fault.String prints it (see ParseSchedule).
// ID is left zero.
func ParseFault(text string) (Fault, error) {
	var f Fault
	bad := func(format string, args ...any) (Fault, error) {
		return Fault{}, fmt.Errorf("%q: %s", text, fmt.Sprintf(format, args...))
	}
	at := strings.LastIndexByte(text, '@')
	if at < 0 {
		return bad("no start time: want KIND(ARGS)@START or KIND(ARGS)@START+DURATION")
	}
	head, when := text[:at], text[at+1:]
	open := strings.IndexByte(head, '(')
	if open < 0 || !strings.HasSuffix(head, ")") {
		return bad("want KIND(ARGS) before @")
	}
	f.Kind = Kind(head[:open])
	if !slices.Contains(AllKinds, f.Kind) {
		return bad("unknown kind %q (kinds: %v)", f.Kind, AllKinds)
	}
	arg := head[open+1 : len(head)-1]

	start, dur, hasDur := strings.Cut(when, "+")
	var err error
	if f.At, err = time.ParseDuration(start); err != nil || f.At < 0 {
		return bad("start %q: want a duration from the schedule's start, such as 2s", start)
	}
	switch {
	case f.Kind.Instant() && hasDur:
		return bad("%s is instantaneous: no +DURATION", f.Kind)
	case !f.Kind.Instant() && !hasDur:
		return bad("%s needs a duration: %s(...)@START+DURATION", f.Kind, f.Kind)
	case hasDur:
		if f.For, err = time.ParseDuration(dur); err != nil || f.For <= 0 {
			return bad("duration %q: want a positive duration, such as 20s", dur)
		}
	}

	if err := f.parseArgs(arg); err != nil {
		return bad("%s(%s): %v", f.Kind, arg, err)
	}
	return f, nil
}

// parseArgs fills the fault's arguments from ARGS of KIND(ARGS).
func (f *Fault) parseArgs(arg string) error {
	parts := strings.Split(arg, ",")
	want := func(n int, form string) error {
		if len(parts) != n {
			return fmt.Errorf("want %s", form)
		}
		return nil
	}
	var err error
	switch f.Kind {
	case OneWay:
		from, to, ok := strings.Cut(arg, "->")
		if !ok {
			return errors.New("want NODE->nK")
		}
		if err = f.parseNodeOrPrimary(from); err != nil {
			return err
		}
		if f.Peer, err = parseNode(to); err != nil {
			return err
		}
		if !f.NodeIsPrimary && f.Peer == f.Node {
			return errors.New("a one-way partition needs two nodes")
		}
	case Split:
		group, rest, ok := strings.Cut(arg, "|")
		if !ok || rest != "rest" {
			return errors.New("want nA+nB|rest (the minority, then |rest)")
		}
		for _, g := range strings.Split(group, "+") {
			i, err := parseNode(g)
			if err != nil {
				return err
			}
			if slices.Contains(f.Group, i) {
				return fmt.Errorf("%s twice", g)
			}
			f.Group = append(f.Group, i)
		}
		slices.Sort(f.Group)
		f.Node = f.Group[0]
	case Loss:
		if err = want(2, "NODE,P%"); err != nil {
			return err
		}
		if err = f.parseNodeOrPrimary(parts[0]); err != nil {
			return err
		}
		p, ok := strings.CutSuffix(parts[1], "%")
		if f.Percent, err = strconv.Atoi(p); !ok || err != nil || f.Percent < 1 || f.Percent > 100 {
			return fmt.Errorf("loss %q: want 1%% to 100%%", parts[1])
		}
	case Delay:
		if err = want(2, "NODE,LATENCY"); err != nil {
			return err
		}
		if err = f.parseNodeOrPrimary(parts[0]); err != nil {
			return err
		}
		if f.Latency, err = time.ParseDuration(parts[1]); err != nil || f.Latency <= 0 {
			return fmt.Errorf("latency %q: want a positive duration, such as 50ms", parts[1])
		}
	case Promote, Resync, Verify:
		if err = want(2, "VOLUME,nK"); err != nil {
			return err
		}
		if err = f.parseVolume(parts[0]); err != nil {
			return err
		}
		f.Node, err = parseNode(parts[1])
	case Disk:
		if len(parts) != 3 && len(parts) != 4 {
			return errors.New("want VOLUME,nK,VARIANT (write-eio, read-eio, slow) or VOLUME,nK,slow,DELAY")
		}
		if err = f.parseVolume(parts[0]); err != nil {
			return err
		}
		if f.Node, err = parseNode(parts[1]); err != nil {
			return err
		}
		f.Variant = -1
		for v := range diskVariants {
			if diskVariantName(v) == parts[2] {
				f.Variant = v
			}
		}
		if f.Variant < 0 {
			return fmt.Errorf("disk variant %q: want write-eio, read-eio or slow", parts[2])
		}
		if len(parts) == 4 {
			if f.Variant != DiskSlow {
				return errors.New("only a slow disk takes a delay")
			}
			d, err := time.ParseDuration(parts[3])
			f.Percent = int((d - slowDiskDelay(0)) / (slowDiskDelay(1) - slowDiskDelay(0)))
			if err != nil || slowDiskDelay(f.Percent) != d || f.Percent < 0 {
				return fmt.Errorf("slow disk delay %q: want 50ms plus a multiple of 5ms", parts[3])
			}
		}
	case KillQEMU:
		f.VM, err = parseVM(arg)
	case Migrate:
		vm, to, ok := strings.Cut(arg, "->")
		if !ok {
			return errors.New("want vmK->nN")
		}
		if f.VM, err = parseVM(vm); err != nil {
			return err
		}
		f.Node, err = parseNode(to)
	default:
		err = f.parseNodeOrPrimary(arg)
	}
	return err
}

// parseNode reads "n1" (the first node) as 0.
func parseNode(s string) (int, error) {
	d, ok := strings.CutPrefix(s, "n")
	n, err := strconv.Atoi(d)
	if !ok || err != nil || n < 1 {
		return 0, fmt.Errorf("node %q: want nK, K from 1", s)
	}
	return n - 1, nil
}

// parseNodeOrPrimary reads a node, or primary(VOLUME): the primary of
// that volume when the fault is applied.
func (f *Fault) parseNodeOrPrimary(s string) error {
	if vol, ok := strings.CutPrefix(s, "primary("); ok {
		vol, ok = strings.CutSuffix(vol, ")")
		if !ok {
			return fmt.Errorf("%q: want primary(VOLUME)", s)
		}
		f.NodeIsPrimary = true
		return f.parseVolume(vol)
	}
	var err error
	f.Node, err = parseNode(s)
	if err != nil {
		return fmt.Errorf("%w or primary(VOLUME)", err)
	}
	return nil
}

// parseVolume reads a workload volume "v0" or a VM's disk "vm0-disk".
func (f *Fault) parseVolume(s string) error {
	if vm, ok := strings.CutPrefix(s, "vm"); ok {
		vm, ok = strings.CutSuffix(vm, "-disk")
		n, err := strconv.Atoi(vm)
		if !ok || err != nil || n < 0 {
			return fmt.Errorf("volume %q: want vK (a workload volume, from v0) or vmK-disk", s)
		}
		f.VMDisk, f.VM = true, n
		return nil
	}
	v, ok := strings.CutPrefix(s, "v")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n < 0 {
		return fmt.Errorf("volume %q: want vK (a workload volume, from v0) or vmK-disk", s)
	}
	f.Volume = n
	return nil
}

// parseVM reads "vm0".
func parseVM(s string) (int, error) {
	d, ok := strings.CutPrefix(s, "vm")
	n, err := strconv.Atoi(d)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("VM %q: want vmK, K from 0", s)
	}
	return n, nil
}

// Check reports what in s a runner with options o cannot play: a kind it
// cannot inject, a node, volume or VM it does not have. Generate's
// schedules always pass; ParseSchedule's are checked before they run.
func (s Schedule) Check(o Options) error {
	var errs []error
	for _, f := range s.Faults {
		add := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", f, fmt.Sprintf(format, args...)))
		}
		if !slices.Contains(o.Kinds, f.Kind) {
			add("this runner does not inject %s (it does: %v)", f.Kind, o.Kinds)
		}
		nodes := []int{f.Node}
		switch f.Kind {
		case OneWay:
			nodes = append(nodes, f.Peer)
		case Split:
			nodes = f.Group
			if len(f.Group) == 0 || len(f.Group) >= o.Nodes {
				add("the minority must leave some of the %d nodes", o.Nodes)
			}
		case KillQEMU:
			nodes = nil
		}
		if f.NodeIsPrimary && len(nodes) > 0 {
			nodes = nodes[1:] // found when applied
		}
		for _, n := range nodes {
			if n < 0 || n >= o.Nodes {
				add("node n%d: the cluster has %d", n+1, o.Nodes)
			}
		}
		usesVolume := f.Kind.TargetsVolume() || f.NodeIsPrimary
		if usesVolume && !f.VMDisk && (f.Volume < 0 || f.Volume >= o.Volumes) {
			add("volume v%d: the runner has %d workload volumes (v0-v%d)", f.Volume, o.Volumes, o.Volumes-1)
		}
		if (f.Kind.NeedsVM() && f.Kind != KillLibvirtd) || (usesVolume && f.VMDisk) {
			if f.VM < 0 || f.VM >= o.VMs {
				add("VM vm%d: the runner runs %d VMs", f.VM, o.VMs)
			}
		}
	}
	return errors.Join(errs...)
}
