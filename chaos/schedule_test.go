package chaos

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGenerateDeterministic(t *testing.T) {
	o := CIOptions(3, 3, 0, []Kind{KillTandemd, PauseShort, PauseLong, PowerOff, Isolate, Split, OneWay, Loss, Bandwidth, Promote, Resync, Verify})
	a, err := Generate(123, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate(123, o)
	if !reflect.DeepEqual(a, b) || a.String() != b.String() {
		t.Fatalf("same seed, different schedules:\n%s\n%s", a, b)
	}
	c, _ := Generate(124, o)
	if reflect.DeepEqual(a.Faults, c.Faults) {
		t.Fatalf("seeds 123 and 124 gave the same schedule: %s", a)
	}
	if strings.Contains(a.String(), "\n") {
		t.Fatalf("a schedule prints on one line: %q", a)
	}
	a.Profile = "long"
	if got := a.Replay(); got != "make chaos SEED=123 SCHEDULES=1" {
		t.Fatalf("replay: %q", got)
	}
}

func TestGenerateShape(t *testing.T) {
	o := CIOptions(3, 2, 0, []Kind{KillTandemd, PauseShort, PauseLong, OneWay, Split, Loss, Promote})
	kinds := map[Kind]int{}
	overlaps := 0
	for seed := uint64(0); seed < 200; seed++ {
		s, err := Generate(seed, o)
		if err != nil {
			t.Fatal(err)
		}
		overlaps += s.Overlaps()
		if len(s.Faults) != o.Faults {
			t.Fatalf("seed %d: %d faults", seed, len(s.Faults))
		}
		for i, f := range s.Faults {
			kinds[f.Kind]++
			if i > 0 && f.At < s.Faults[i-1].At {
				t.Fatalf("seed %d: not ordered: %s", seed, s)
			}
			if f.At < 0 || f.At > o.Length || f.Node < 0 || f.Node >= o.Nodes || f.Volume >= o.Volumes {
				t.Fatalf("seed %d: fault out of range: %s", seed, f)
			}
			switch f.Kind {
			case PauseShort:
				if f.For < o.ShortPause[0] || f.For > o.ShortPause[1] {
					t.Fatalf("short pause %s", f)
				}
			case PauseLong:
				if f.For < o.LongPause[0] {
					t.Fatalf("long pause %s", f)
				}
			case OneWay:
				if f.Peer == f.Node {
					t.Fatalf("one-way to itself: %s", f)
				}
			case Split:
				if len(f.Group) != 1 {
					t.Fatalf("split of 3 nodes: minority %v", f.Group)
				}
			case Loss:
				if f.Percent < 10 || f.Percent > 60 {
					t.Fatalf("loss %s", f)
				}
			case Promote:
				if f.For != 0 {
					t.Fatalf("an operator action has no duration: %s", f)
				}
			}
		}
	}
	if overlaps == 0 {
		t.Fatal("no two faults ever overlap")
	}
	for _, k := range o.Kinds {
		if kinds[k] == 0 {
			t.Fatalf("kind %s never generated", k)
		}
	}
	if _, err := Generate(1, Options{}); err == nil {
		t.Fatal("empty options accepted")
	}
}

// TestGenerateDisk: disk faults carry a variant and print it, every variant
// comes up, and a schedule without disk faults is what the builds before
// them made of the same seed (a replay command printed then still works).
func TestGenerateDisk(t *testing.T) {
	noDisk := CIOptions(3, 3, 0, []Kind{KillTandemd, PauseShort, PauseLong, PowerOff, Isolate, Split, OneWay, Loss, Bandwidth, Promote, Resync, Verify, Maintenance})
	s, err := Generate(7, noDisk)
	if err != nil {
		t.Fatal(err)
	}
	const before = "seed=7 profile= length=5s faults=[one-way(n1->n3)@1.47s+1.89s one-way(n2->n3)@2.97s+1.75s split(n3|rest)@3.20s+1.01s resync(v2,n2)@3.97s]"
	if s.String() != before {
		t.Fatalf("a schedule without disk faults changed:\n got %s\nwant %s", s, before)
	}
	o := CIOptions(3, 3, 0, []Kind{Disk, KillTandemd})
	variants := map[int]int{}
	for seed := uint64(0); seed < 100; seed++ {
		s, err := Generate(seed, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range s.Faults {
			if f.Kind != Disk {
				continue
			}
			if f.Variant < 0 || f.Variant >= diskVariants || f.Percent < 0 || f.Percent > 30 || f.For <= 0 {
				t.Fatalf("seed %d: disk fault out of range: %+v", seed, f)
			}
			name := "," + diskVariantName(f.Variant) + ")"
			if f.Variant == DiskSlow {
				name = fmt.Sprintf(",slow,%s)", slowDiskDelay(f.Percent))
			}
			if !strings.Contains(f.String(), name) {
				t.Fatalf("seed %d: %s does not name its variant", seed, f)
			}
			variants[f.Variant]++
		}
	}
	for v := range diskVariants {
		if variants[v] == 0 {
			t.Fatalf("disk variant %s never generated: %v", diskVariantName(v), variants)
		}
	}
}

// TestGenerateDelay: delay faults carry a latency of 20-200ms that they
// print, the range is covered, a delay lasts like any network fault, and
// kinds lists without delay still give what earlier builds made.
func TestGenerateDelay(t *testing.T) {
	o := CIOptions(3, 3, 0, []Kind{Delay, KillTandemd, Isolate})
	var lo, hi time.Duration
	n := 0
	for seed := uint64(0); seed < 200; seed++ {
		s, err := Generate(seed, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range s.Faults {
			if f.Kind != Delay {
				if f.Latency != 0 {
					t.Fatalf("seed %d: %s has a latency", seed, f)
				}
				continue
			}
			n++
			if f.Latency < 20*time.Millisecond || f.Latency > 200*time.Millisecond || f.For < o.MinFault || f.For > o.MaxFault {
				t.Fatalf("seed %d: delay out of range: %+v", seed, f)
			}
			if want := fmt.Sprintf("delay(n%d,%s)@", f.Node+1, f.Latency); !strings.HasPrefix(f.String(), want) {
				t.Fatalf("seed %d: %s, want it to start %s", seed, f, want)
			}
			if lo == 0 || f.Latency < lo {
				lo = f.Latency
			}
			hi = max(hi, f.Latency)
		}
	}
	if n == 0 || lo > 40*time.Millisecond || hi < 180*time.Millisecond {
		t.Fatalf("%d delays, latencies %s..%s: the range 20-200ms is not covered", n, lo, hi)
	}
	if !slices.Contains(AllKinds, Delay) {
		t.Fatal("AllKinds (the report's list) lacks delay")
	}
}

// TestGenerateVMDisk: with a VM, promote, resync, verify and disk faults
// may name its disk (and only those kinds); everything else in the
// schedule is what the builds before that made of the seed, so seeds found
// with VMs replay the same faults, times and nodes. Without VMs no fault
// names a VM's disk.
func TestGenerateVMDisk(t *testing.T) {
	kinds := []Kind{KillTandemd, Promote, Resync, Verify, Disk, Isolate, KillQEMU, Migrate}
	s, err := Generate(3, LongOptions(3, 3, 1, kinds))
	if err != nil {
		t.Fatal(err)
	}
	// Before VM disks were targets this seed gave verify(v0,n3) and
	// resync(v1,n1): only those two arguments moved.
	const want = "seed=3 profile= length=20s faults=[verify(vm0-disk,n3)@4.39s disk(v0,n1,write-eio)@5.15s+6.22s verify(v2,n1)@5.21s resync(vm0-disk,n1)@6.48s kill-tandemd(n1)@12.02s+5.05s isolate(n3)@12.29s+1.63s migrate(vm0->n3)@13.06s kill-tandemd(n3)@15.06s+7.54s]"
	if s.String() != want {
		t.Fatalf("seed 3 with a VM:\n got %s\nwant %s", s, want)
	}
	targeted := map[Kind]int{}
	for seed := uint64(0); seed < 300; seed++ {
		withVM, err := Generate(seed, LongOptions(3, 3, 2, kinds))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range withVM.Faults {
			if !f.VMDisk {
				continue
			}
			if !f.Kind.TargetsVolume() || f.VM < 0 || f.VM >= 2 || !strings.Contains(f.String(), fmt.Sprintf("(vm%d-disk,", f.VM)) {
				t.Fatalf("seed %d: %s names a VM disk", seed, f)
			}
			targeted[f.Kind]++
		}
		noVM, err := Generate(seed, LongOptions(3, 3, 0, []Kind{KillTandemd, Promote, Resync, Verify, Disk, Isolate}))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range noVM.Faults {
			if f.VMDisk {
				t.Fatalf("seed %d: %s names a VM disk without VMs", seed, f)
			}
		}
	}
	for _, k := range []Kind{Promote, Resync, Verify, Disk} {
		if targeted[k] == 0 {
			t.Fatalf("%s never targets a VM's disk: %v", k, targeted)
		}
	}
}
