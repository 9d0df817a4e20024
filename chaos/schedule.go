package chaos

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind names one sort of fault or operator action.
type Kind string

// Every kind a schedule may hold. A kind is only generated when the runner
// says it can inject it (Options.Kinds).
const (
	// Process faults.
	KillTandemd  Kind = "kill-tandemd"  // SIGKILL of tandemd; restarted at heal
	KillLibvirtd Kind = "kill-libvirtd" // SIGKILL of libvirtd; restarted at heal
	KillQEMU     Kind = "kill-qemu"     // SIGKILL of the QEMU of VM, wherever it runs; tandem restarts it
	PauseShort   Kind = "pause-short"   // SIGSTOP tandemd for less than the HA suspect timeout
	PauseLong    Kind = "pause-long"    // SIGSTOP tandemd for longer than the self-fence lease
	// Host faults.
	PowerOff Kind = "power-off" // everything in the node's namespace killed, its ports down
	// Network faults (nftables and tc inside the node's namespace).
	Isolate   Kind = "isolate"   // the node drops all backend traffic from and to the others
	Split     Kind = "split"     // a minority of nodes cut from the majority
	OneWay    Kind = "one-way"   // the node's packets to Peer are dropped, Peer's reach it
	Loss      Kind = "loss"      // Percent% of the node's backend packets dropped (numgen random)
	Bandwidth Kind = "bandwidth" // tc tbf caps the node's backend egress
	Delay     Kind = "delay"     // the node's backend packets held Latency each way (NFQUEUE, internal/netdelay)
	// Disk faults: a slot filled by a DiskNemesis (internal/faultfs); never
	// generated without one.
	Disk Kind = "disk"
	// Operator actions, instantaneous (no heal needed).
	Promote     Kind = "promote"     // promote another UpToDate replica of Volume
	Resync      Kind = "resync"      // ask Volume's primary to resync Outdated replicas
	Verify      Kind = "verify"      // online verify of Volume (result only logged)
	Maintenance Kind = "maintenance" // maintenance enable on the node; disable at heal
	Migrate     Kind = "migrate"     // live-migrate the VM to the node
)

// AllKinds is every kind in a fixed order (reports list them so).
var AllKinds = []Kind{KillTandemd, KillLibvirtd, KillQEMU, PauseShort, PauseLong, PowerOff,
	Isolate, Split, OneWay, Loss, Bandwidth, Delay, Disk, Promote, Resync, Verify, Maintenance, Migrate}

// Instant reports whether the kind is an action with no duration and no
// heal of its own.
func (k Kind) Instant() bool {
	switch k {
	case Promote, Resync, Verify, Migrate, KillQEMU:
		return true
	}
	return false
}

// TargetsVolume reports whether the kind acts on one volume (Fault.Volume):
// with VMs, a VM's disk may be the one.
func (k Kind) TargetsVolume() bool {
	switch k {
	case Promote, Resync, Verify, Disk:
		return true
	}
	return false
}

// The range of a Delay fault's latency, each way.
const (
	minLatencyMs = 20
	maxLatencyMs = 200
)

// NeedsVM reports whether the kind acts on a VM or its host's libvirtd:
// generated only when the runner runs VMs (Config.VMs).
func (k Kind) NeedsVM() bool {
	switch k {
	case KillLibvirtd, KillQEMU, Migrate:
		return true
	}
	return false
}

// Fault is one scheduled fault: Kind applied At after the schedule starts
// and healed For later.
type Fault struct {
	ID   int
	Kind Kind
	// Node is the index (0-based) of the node the fault hits.
	Node int
	// Peer is the other end of a one-way partition.
	Peer int
	// Group is the minority of a split (node indices, sorted).
	Group []int
	// Percent is the loss rate of a Loss fault.
	Percent int
	// Latency is how long a Delay fault holds each of the node's backend
	// packets (20-200ms), in each direction.
	Latency time.Duration
	// Volume is the index of the workload volume an operator action or a
	// disk fault concerns, unless VMDisk.
	Volume int
	// VMDisk: the action or disk fault concerns the disk volume of VM
	// instead (Kind.TargetsVolume, with Options.VMs).
	VMDisk bool
	// VM is the index of the VM a KillQEMU or Migrate concerns.
	VM int
	// Variant is what a Disk fault does (DiskWriteEIO, DiskSlow,
	// DiskReadEIO); Percent then scales a slow disk's delay.
	Variant int
	// NodeIsPrimary: Node is not fixed but found when the fault is
	// applied: the primary of the fault's volume (Volume, or the VM's disk
	// with VMDisk) at that moment. Only hand-written schedules have it
	// (ParseSchedule), printed "primary(v0)" where the node would be: the
	// runner rotates primaries with the seed, and a fault meant for "the
	// primary" must find it after earlier faults moved it.
	NodeIsPrimary bool
	At            time.Duration
	For           time.Duration
}

// End is when the fault is healed.
func (f Fault) End() time.Duration { return f.At + f.For }

// String is the fault on one line, e.g. "kill-tandemd(n2)@1.20s+3.00s".
func (f Fault) String() string {
	var arg string
	switch f.Kind {
	case Split:
		names := make([]string, len(f.Group))
		for i, g := range f.Group {
			names[i] = "n" + strconv.Itoa(g+1)
		}
		arg = strings.Join(names, "+") + "|rest"
	case OneWay:
		arg = fmt.Sprintf("%s->n%d", f.nodeArg(), f.Peer+1)
	case Loss:
		arg = fmt.Sprintf("%s,%d%%", f.nodeArg(), f.Percent)
	case Delay:
		arg = fmt.Sprintf("%s,%s", f.nodeArg(), f.Latency)
	case Promote, Resync, Verify:
		arg = fmt.Sprintf("%s,n%d", f.volumeArg(), f.Node+1)
	case Disk:
		arg = fmt.Sprintf("%s,n%d,%s", f.volumeArg(), f.Node+1, diskVariantName(f.Variant))
		if f.Variant == DiskSlow {
			// The delay, so that a printed schedule replays exactly
			// (CHAOS_SCHEDULE).
			arg += "," + slowDiskDelay(f.Percent).String()
		}
	case KillQEMU:
		arg = fmt.Sprintf("vm%d", f.VM)
	case Migrate:
		arg = fmt.Sprintf("vm%d->n%d", f.VM, f.Node+1)
	default:
		arg = f.nodeArg()
	}
	if f.Kind.Instant() {
		return fmt.Sprintf("%s(%s)@%.2fs", f.Kind, arg, f.At.Seconds())
	}
	return fmt.Sprintf("%s(%s)@%.2fs+%.2fs", f.Kind, arg, f.At.Seconds(), f.For.Seconds())
}

// nodeArg names the fault's node in String: "n2", or "primary(v0)" when
// it is found at apply time (NodeIsPrimary).
func (f Fault) nodeArg() string {
	if f.NodeIsPrimary {
		return "primary(" + f.volumeArg() + ")"
	}
	return fmt.Sprintf("n%d", f.Node+1)
}

// volumeArg names the fault's volume in String: "v1", or "vm0-disk".
func (f Fault) volumeArg() string {
	if f.VMDisk {
		return fmt.Sprintf("vm%d-disk", f.VM)
	}
	return fmt.Sprintf("v%d", f.Volume)
}

// Options shape a schedule. The zero value is not usable: the runner fills
// Nodes, Volumes and Kinds from what its cluster has.
type Options struct {
	Nodes   int           // nodes in the cluster (indices 0..Nodes-1)
	Volumes int           // volumes operator actions may name
	VMs     int           // VMs KillQEMU and Migrate may name (needed for them)
	Length  time.Duration // faults start within the first 80% of it
	Faults  int           // how many faults
	// MinFault and MaxFault bound a fault's duration (except the pauses,
	// which are set against the HA timeouts).
	MinFault, MaxFault time.Duration
	// ShortPause is below the HA suspect timeout; LongPause above the
	// self-fence lease plus grace (ha.DefaultTiming: 1.5s, 4s+2s).
	ShortPause, LongPause [2]time.Duration
	Kinds                 []Kind
}

// CIOptions are the short schedules `make test` runs.
func CIOptions(nodes, volumes, vms int, kinds []Kind) Options {
	return Options{
		Nodes: nodes, Volumes: volumes, VMs: vms, Length: 5 * time.Second, Faults: 4,
		MinFault: 500 * time.Millisecond, MaxFault: 2500 * time.Millisecond,
		ShortPause: [2]time.Duration{200 * time.Millisecond, time.Second},
		LongPause:  [2]time.Duration{6200 * time.Millisecond, 7 * time.Second},
		Kinds:      kinds,
	}
}

// LongOptions are the schedules of `make chaos`.
func LongOptions(nodes, volumes, vms int, kinds []Kind) Options {
	o := CIOptions(nodes, volumes, vms, kinds)
	o.Length, o.Faults, o.MaxFault = 20*time.Second, 8, 8*time.Second
	o.LongPause = [2]time.Duration{6500 * time.Millisecond, 12 * time.Second}
	return o
}

// Schedule is a seeded sequence of faults, ordered by start time.
type Schedule struct {
	Seed    uint64
	Profile string // "ci" or "long": which Options made it
	Length  time.Duration
	Faults  []Fault
}

// Generate makes the schedule of seed: the same seed and options always give
// the same schedule.
func Generate(seed uint64, o Options) (Schedule, error) {
	if o.Nodes < 2 || o.Length <= 0 || o.Faults < 0 || len(o.Kinds) == 0 || o.MaxFault < o.MinFault || o.MinFault <= 0 {
		return Schedule{}, fmt.Errorf("chaos: bad schedule options %+v", o)
	}
	if o.VMs <= 0 && slices.ContainsFunc(o.Kinds, Kind.NeedsVM) {
		return Schedule{}, fmt.Errorf("chaos: kinds %v need a VM (Options.VMs)", o.Kinds)
	}
	// PCG with the seed in both words: a fixed, documented generator, so a
	// seed printed by one build replays in the next.
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	vmRng := rand.New(rand.NewPCG(seed^0x5851f42d4c957f2d, seed))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	s := Schedule{Seed: seed, Length: o.Length}
	for range o.Faults {
		f := Fault{Kind: o.Kinds[rng.IntN(len(o.Kinds))], Node: rng.IntN(o.Nodes)}
		f.At = between(0, o.Length*8/10)
		switch f.Kind {
		case PauseShort:
			f.For = between(o.ShortPause[0], o.ShortPause[1])
		case PauseLong:
			f.For = between(o.LongPause[0], o.LongPause[1])
		default:
			f.For = between(o.MinFault, o.MaxFault)
		}
		if f.Kind.Instant() {
			f.For = 0
		}
		switch f.Kind {
		case OneWay:
			f.Peer = (f.Node + 1 + rng.IntN(o.Nodes-1)) % o.Nodes
		case Split:
			perm := rng.Perm(o.Nodes)
			f.Group = perm[:(o.Nodes-1)/2]
			slices.Sort(f.Group)
			if len(f.Group) > 0 {
				f.Node = f.Group[0]
			}
		case Loss:
			f.Percent = 10 + rng.IntN(51)
		case Delay:
			// Drawn only for delays, as the disk variant is.
			f.Latency = time.Duration(minLatencyMs+rng.IntN(maxLatencyMs-minLatencyMs+1)) * time.Millisecond
		case Disk:
			// Drawn only for disk faults, so schedules without them
			// stay what earlier builds made of the same seed.
			f.Variant = rng.IntN(diskVariants)
			f.Percent = rng.IntN(31)
		case KillQEMU, Migrate:
			// Drawn only for VM faults, as the disk variant is.
			f.VM = rng.IntN(o.VMs)
		}
		if o.Volumes > 0 {
			f.Volume = rng.IntN(o.Volumes)
		}
		if o.VMs > 0 && f.Kind.TargetsVolume() {
			// A VM's disk is a target too, one volume among the others.
			// From a stream of its own, so that the rest of a schedule
			// is what the builds before made of the seed.
			if v := vmRng.IntN(o.Volumes + o.VMs); v >= o.Volumes {
				f.VMDisk, f.VM = true, v-o.Volumes
			}
		}
		s.Faults = append(s.Faults, f)
	}
	slices.SortStableFunc(s.Faults, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
	for i := range s.Faults {
		s.Faults[i].ID = i + 1
	}
	return s, nil
}

// String is the schedule on one line.
func (s Schedule) String() string {
	parts := make([]string, len(s.Faults))
	for i, f := range s.Faults {
		parts[i] = f.String()
	}
	return fmt.Sprintf("seed=%d profile=%s length=%s faults=[%s]", s.Seed, s.Profile, s.Length, strings.Join(parts, " "))
}

// Replay is the one-line command that runs this schedule again.
func (s Schedule) Replay() string {
	switch s.Profile {
	case "fixed":
		// A hand-written schedule (ParseSchedule): the whole line, seed
		// and length included.
		return fmt.Sprintf("CHAOS_SCHEDULE='%s' go test -count=1 -run 'TestChaosSchedules$' ./chaos/", s)
	case "ci":
		return fmt.Sprintf("CHAOS_SEED=%d CHAOS_SCHEDULES=1 go test -count=1 -run 'TestChaosSchedules$' ./chaos/", s.Seed)
	default:
		return fmt.Sprintf("make chaos SEED=%d SCHEDULES=1", s.Seed)
	}
}

// Overlaps counts the pairs of faults whose intervals intersect.
func (s Schedule) Overlaps() int {
	n := 0
	for i, a := range s.Faults {
		for _, b := range s.Faults[i+1:] {
			if b.At < a.End() && a.At < b.End() {
				n++
			}
		}
	}
	return n
}
