package chaos

import (
	"reflect"
	"strings"
	"testing"
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
			if !strings.Contains(f.String(), ","+diskVariantName(f.Variant)+")") {
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
