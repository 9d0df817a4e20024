package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// printed is what String keeps of a generated fault: times to the
// hundredth of a second, and only the arguments its kind prints (Generate
// draws a volume and a node for every fault, a percentage for every disk
// fault).
func printed(f Fault) Fault {
	f.At, f.For = f.At.Round(10*time.Millisecond), f.For.Round(10*time.Millisecond)
	if f.VMDisk || (!f.Kind.TargetsVolume() && !f.NodeIsPrimary) {
		f.Volume = 0
	}
	if f.Kind == KillQEMU {
		f.Node = 0 // wherever the VM runs
	}
	if f.Kind == Disk && f.Variant != DiskSlow {
		f.Percent = 0
	}
	return f
}

// TestParseRoundTrip: every generated schedule, printed and parsed, is the
// same schedule (as far as String prints it) and prints the same again.
func TestParseRoundTrip(t *testing.T) {
	kinds := []Kind{KillTandemd, KillLibvirtd, KillQEMU, PauseShort, PauseLong, PowerOff, Isolate, Split, OneWay, Loss,
		Bandwidth, Delay, Disk, Promote, Resync, Verify, Maintenance, Migrate}
	seen := map[Kind]int{}
	for _, o := range []Options{CIOptions(3, 3, 0, kinds[:1]), CIOptions(3, 3, 1, kinds), LongOptions(3, 3, 2, kinds), LongOptions(5, 3, 1, kinds)} {
		for seed := uint64(0); seed < 300; seed++ {
			g, err := Generate(seed, o)
			if err != nil {
				t.Fatal(err)
			}
			g.Profile = "long"
			p, err := ParseSchedule(g.String())
			if err != nil {
				t.Fatalf("seed %d: %v\n%s", seed, err, g)
			}
			if p.String() != g.String() {
				t.Fatalf("seed %d: printed, parsed and printed again:\n got %s\nwant %s", seed, p, g)
			}
			if p.Seed != g.Seed || p.Profile != g.Profile || p.Length != g.Length || len(p.Faults) != len(g.Faults) {
				t.Fatalf("seed %d: header: got %+v, want %+v", seed, p, g)
			}
			for i, f := range g.Faults {
				seen[f.Kind]++
				if want := printed(f); !reflect.DeepEqual(p.Faults[i], want) {
					t.Fatalf("seed %d: fault %d:\n got %+v\nwant %+v", seed, i, p.Faults[i], want)
				}
			}
			if err := p.Check(o); err != nil {
				t.Fatalf("seed %d: a generated schedule fails its own options: %v", seed, err)
			}
		}
	}
	for _, k := range kinds {
		if seen[k] == 0 {
			t.Fatalf("%s never generated: the round trip does not cover it", k)
		}
	}
}

// TestParseHandWritten: the bare fault list, primary(VOLUME), defaults for
// the length, ordering and numbering, and the replay of a fixed schedule.
func TestParseHandWritten(t *testing.T) {
	s, err := ParseSchedule("  kill-tandemd(n2)@30s+3s isolate(primary(v0))@2s+22s disk(vm0-disk,n1,slow,100ms)@1s+2s delay(primary(vm1-disk),50ms)@0s+1s ")
	if err != nil {
		t.Fatal(err)
	}
	want := []Fault{
		{ID: 1, Kind: Delay, NodeIsPrimary: true, VMDisk: true, VM: 1, Latency: 50 * time.Millisecond, For: time.Second},
		{ID: 2, Kind: Disk, VMDisk: true, Variant: DiskSlow, Percent: 10, At: time.Second, For: 2 * time.Second},
		{ID: 3, Kind: Isolate, NodeIsPrimary: true, Volume: 0, At: 2 * time.Second, For: 22 * time.Second},
		{ID: 4, Kind: KillTandemd, Node: 1, At: 30 * time.Second, For: 3 * time.Second},
	}
	if !reflect.DeepEqual(s.Faults, want) {
		t.Fatalf("got  %+v\nwant %+v", s.Faults, want)
	}
	if s.Length != 35*time.Second {
		t.Fatalf("length %s: want the last heal (33s) plus %s", s.Length, fixedTail)
	}
	if got := s.Faults[2].String(); got != "isolate(primary(v0))@2.00s+22.00s" {
		t.Fatalf("printed %q", got)
	}
	s.Seed, s.Profile = 4, "fixed"
	again, err := ParseSchedule(s.String())
	if err != nil || again.String() != s.String() {
		t.Fatalf("a fixed schedule's line does not parse back: %v\n%s\n%s", err, s, again)
	}
	if r := s.Replay(); !strings.HasPrefix(r, "CHAOS_SCHEDULE='seed=4 profile=fixed length=35s faults=[delay(primary(vm1-disk),50ms)@0.00s+1.00s ") {
		t.Fatalf("replay of a fixed schedule: %s", r)
	}
	o := CIOptions(3, 3, 0, []Kind{KillTandemd, Isolate, Delay, Disk})
	if err := s.Check(o); err == nil || !strings.Contains(err.Error(), "vm1: the runner runs 0 VMs") {
		t.Fatalf("VM disks without VMs: %v", err)
	}
	o.VMs = 2
	if err := s.Check(o); err != nil {
		t.Fatal(err)
	}
}

// TestParseErrors: malformed input is refused with a message that says
// what was expected; values the runner lacks are Check's to refuse.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"isolate(n1)", "no start time"},
		{"isolate[n1]@2s+3s", "want KIND(ARGS) before @"},
		{"isolate(n1@2s+3s", "want KIND(ARGS) before @"},
		{"explode(n1)@2s+3s", `unknown kind "explode"`},
		{"isolate(n1)@2s", "isolate needs a duration"},
		{"isolate(n1)@2+3s", `start "2"`},
		{"isolate(n1)@-1s+3s", `start "-1s"`},
		{"isolate(n1)@2s+0s", `duration "0s"`},
		{"isolate(n1)@2s+soon", `duration "soon"`},
		{"promote(v0,n1)@2s+3s", "promote is instantaneous"},
		{"isolate(n0)@2s+3s", `node "n0"`},
		{"isolate(node1)@2s+3s", `node "node1": want nK, K from 1 or primary(VOLUME)`},
		{"isolate(primary(v0)@2s+3s", `want primary(VOLUME)`},
		{"isolate(primary(x0))@2s+3s", `volume "x0"`},
		{"isolate(primary(vm0))@2s+3s", `volume "vm0"`},
		{"one-way(n1->n1)@2s+3s", "two nodes"},
		{"one-way(n1,n2)@2s+3s", "want NODE->nK"},
		{"one-way(n1->primary(v0))@2s+3s", `node "primary(v0)"`},
		{"split(n1+n1|rest)@2s+3s", "n1 twice"},
		{"split(n1)@2s+3s", "|rest"},
		{"loss(n1,30)@2s+3s", `loss "30"`},
		{"loss(n1,0%)@2s+3s", `loss "0%"`},
		{"loss(n1)@2s+3s", "want NODE,P%"},
		{"delay(n1,fast)@2s+3s", `latency "fast"`},
		{"resync(v0)@2s", "want VOLUME,nK"},
		{"verify(primary(v0),n1)@2s", `volume "primary(v0)"`},
		{"disk(v0,n1,melt)@2s+3s", `disk variant "melt"`},
		{"disk(v0,n1,write-eio,100ms)@2s+3s", "only a slow disk"},
		{"disk(v0,n1,slow,52ms)@2s+3s", `slow disk delay "52ms"`},
		{"disk(v0,n1,slow,10ms)@2s+3s", `slow disk delay "10ms"`},
		{"kill-qemu(n1)@2s", `VM "n1"`},
		{"migrate(vm0,n2)@2s", "want vmK->nN"},
		{"isolate(n1)@2s+3s kill-tandemd(n2)", "fault 2"},
		{"seed=x faults=[isolate(n1)@2s+3s]", "seed=x"},
		{"seed=1 colour=red faults=[isolate(n1)@2s+3s]", "unknown key"},
		{"seed=1 length faults=[isolate(n1)@2s+3s]", "want key=value"},
		{"seed=1 faults=[isolate(n1)@2s+3s", "not closed"},
	} {
		_, err := ParseSchedule(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSchedule(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	s, err := ParseSchedule("isolate(n4)@1s+1s promote(v3,n1)@1s split(n1+n2+n3|rest)@1s+1s migrate(vm0->n2)@2s bandwidth(primary(v5))@1s+1s")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Check(CIOptions(3, 3, 0, []Kind{Isolate, Promote, Split, Bandwidth}))
	for _, want := range []string{"node n4: the cluster has 3", "volume v3: the runner has 3", "the minority must leave some", "does not inject migrate", "vm0: the runner runs 0 VMs", "volume v5"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v, want it to say %q", err, want)
		}
	}
}
