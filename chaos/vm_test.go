package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/guest"
)

// TestGenerateVMKinds: with VMs the VM kinds are generated, name a VM in
// range and print it; kill-qemu and migrate are instant; VM kinds without
// a VM are refused; and the VM index is drawn only for VM faults, so a
// schedule without them is what the same seed gave before.
func TestGenerateVMKinds(t *testing.T) {
	kinds := []Kind{KillTandemd, PowerOff, Isolate, KillLibvirtd, KillQEMU, Migrate}
	o := LongOptions(3, 3, 2, kinds)
	seen := map[Kind]int{}
	vms := map[int]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		s, err := Generate(seed, o)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := Generate(seed, o)
		if s.String() != again.String() {
			t.Fatalf("seed %d not deterministic:\n%s\n%s", seed, s, again)
		}
		for _, f := range s.Faults {
			seen[f.Kind]++
			switch f.Kind {
			case KillQEMU, Migrate:
				if f.VM < 0 || f.VM >= 2 || f.For != 0 {
					t.Fatalf("seed %d: %+v", seed, f)
				}
				vms[f.VM] = true
				if !strings.Contains(f.String(), "(vm") {
					t.Fatalf("%s does not name its VM", f)
				}
			case KillLibvirtd:
				if f.For < o.MinFault || f.For > o.MaxFault {
					t.Fatalf("seed %d: kill-libvirtd lasts %s", seed, f.For)
				}
			default:
				if f.VM != 0 {
					t.Fatalf("seed %d: %s drew a VM", seed, f)
				}
			}
		}
	}
	for _, k := range kinds {
		if seen[k] == 0 {
			t.Fatalf("%s never generated: %v", k, seen)
		}
	}
	if !vms[0] || !vms[1] {
		t.Fatalf("VM indices drawn: %v", vms)
	}
	if got := (Fault{Kind: Migrate, VM: 1, Node: 2, At: time.Second}).String(); got != "migrate(vm1->n3)@1.00s" {
		t.Fatalf("migrate prints %q", got)
	}
	if got := (Fault{Kind: KillQEMU, VM: 0, At: time.Second}).String(); got != "kill-qemu(vm0)@1.00s" {
		t.Fatalf("kill-qemu prints %q", got)
	}
	if _, err := Generate(1, LongOptions(3, 3, 0, kinds)); err == nil {
		t.Fatal("VM kinds without a VM accepted")
	}
	// The same seed with and without VMs (and no VM kinds): the same
	// schedule, but for the operator actions that now name the VM's disk
	// (TestGenerateVMDisk).
	plain := []Kind{KillTandemd, PauseShort, PauseLong, PowerOff, Isolate, Split, OneWay, Loss, Bandwidth, Promote, Resync, Verify, Maintenance}
	for seed := uint64(0); seed < 20; seed++ {
		a, _ := Generate(seed, CIOptions(3, 3, 0, plain))
		b, _ := Generate(seed, CIOptions(3, 3, 1, plain))
		for i := range b.Faults {
			b.Faults[i].VMDisk, b.Faults[i].VM = false, 0
		}
		if a.String() != b.String() {
			t.Fatalf("seed %d: VMs changed a schedule without VM faults:\n%s\n%s", seed, a, b)
		}
	}
}

func TestQEMUDomain(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    string
		ok      bool
	}{
		{"/usr/bin/qemu-system-x86_64\x00-name\x00guest=s7-vm0,debug-threads=on\x00-S\x00", "s7-vm0", true},
		{"qemu-system-aarch64\x00-machine\x00virt\x00-name\x00debug-threads=on,guest=x\x00", "x", true},
		{"/usr/bin/qemu-system-x86_64\x00-name\x00s7-vm0\x00", "", false}, // no guest=
		{"/usr/sbin/libvirtd\x00-name\x00guest=s7-vm0\x00", "", false},
		{"", "", false},
	} {
		got, ok := compute.QEMUDomain([]byte(c.cmdline))
		if got != c.want || ok != c.ok {
			t.Errorf("compute.QEMUDomain(%q) = %q, %v; want %q, %v", c.cmdline, got, ok, c.want, c.ok)
		}
	}
}

// TestDomainSamples: one sample per VM of ours, running only in libvirt's
// running state (an incoming migration is paused), with the domain's ID;
// other domains are ignored.
func TestDomainSamples(t *testing.T) {
	t0 := time.Unix(100, 0)
	active := []libvirt.Domain{{Name: "a", ID: 4}, {Name: "b", ID: 7}, {Name: "other", ID: 1}}
	states := map[string]libvirt.DomainState{"a": libvirt.DomainRunning, "b": libvirt.DomainPaused, "other": libvirt.DomainRunning}
	got := domainSamples("n2", active, states, []string{"a", "b", "c"}, t0, t0.Add(time.Millisecond))
	want := []DomainSample{
		{Node: "n2", Domain: "a", ID: 4, Running: true, Before: t0, After: t0.Add(time.Millisecond)},
		{Node: "n2", Domain: "b", ID: -1, Before: t0, After: t0.Add(time.Millisecond)},
		{Node: "n2", Domain: "c", ID: -1, Before: t0, After: t0.Add(time.Millisecond)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sample %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// A domain listed but gone before its state was read is not running.
	got = domainSamples("n1", []libvirt.Domain{{Name: "a", ID: 2}}, map[string]libvirt.DomainState{}, []string{"a"}, t0, t0)
	if got[0].Running {
		t.Fatalf("a domain without a state counted running: %+v", got[0])
	}
}

// beats makes a boot's heartbeats: sequence numbers from seq, counters
// from counter, one per 10ms from at.
func beats(boot, seq, counter uint64, n int, at time.Time, mono time.Duration) []guest.Arrival {
	var out []guest.Arrival
	for i := range n {
		out = append(out, guest.Arrival{Datagram: guest.Datagram{Boot: boot, Seq: seq + uint64(i), Acked: counter + uint64(i), Mono: mono + time.Duration(i)*10*time.Millisecond},
			At: at.Add(time.Duration(i) * 10 * time.Millisecond)})
	}
	return out
}

func TestCheckGuestCounter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// Boot 0 reaches counter 20; a restart (boot 1) reads 20 or 21 from
	// the disk and goes on; a migration keeps the boot and the sequence.
	good := append(beats(0, 1, 1, 20, t0, time.Second), beats(1, 1, 21, 10, t0.Add(5*time.Second), time.Second)...)
	good = append(good, beats(1, 11, 31, 10, t0.Add(6*time.Second), 2*time.Second)...)
	if a := CheckGuestCounter("vm", good); len(a) != 0 {
		t.Fatalf("good history: %v", a)
	}
	// An agent killed before its first write leaves the next one the same
	// boot number (seed 3003): two agents of boot 1, both from 30.
	stalled := beats(1, 1, 30, 11, t0.Add(5*time.Second), time.Second)
	for i := range stalled {
		stalled[i].Acked = 30 // it never wrote
	}
	same := append(beats(0, 1, 1, 30, t0, time.Second), stalled...)
	same = append(same, beats(1, 1, 30, 20, t0.Add(9*time.Second), 3*time.Second)...)
	if a := CheckGuestCounter("vm", same); len(a) != 0 {
		t.Fatalf("a boot number repeated after an agent that never wrote: %v", a)
	}
	// The restarted guest read 15 from its disk: 16..20 were lost.
	lost := append(beats(0, 1, 1, 20, t0, time.Second), beats(1, 1, 15, 10, t0.Add(5*time.Second), time.Second)...)
	if a := CheckGuestCounter("vm", lost); len(a) != 1 || !strings.Contains(a[0].Detail, "lost") || a[0].Checker != "vm" {
		t.Fatalf("lost writes: %v", a)
	}
	// The old copy went on writing after the new boot read the disk.
	twice := append(beats(0, 1, 1, 20, t0, time.Second), beats(1, 1, 21, 10, t0.Add(5*time.Second), time.Second)...)
	twice = append(twice, beats(0, 21, 21, 20, t0.Add(5*time.Second), 3*time.Second)...)
	twice = append(twice, beats(1, 11, 31, 10, t0.Add(6*time.Second), time.Second)...)
	if a := CheckGuestCounter("vm", twice); len(a) == 0 {
		t.Fatal("an old boot acknowledging past the new boot's start passed")
	}
	// The counter block was lost: boot 0 again, from 0.
	again := append(beats(0, 1, 1, 20, t0, time.Second), beats(0, 1, 0, 10, t0.Add(5*time.Second), 7*time.Second)...)
	if a := CheckGuestCounter("vm", again); len(a) != 1 || !strings.Contains(a[0].Detail, "lost") {
		t.Fatalf("a repeated boot from 0: %v", a)
	}
	// Within an agent the counter went back.
	back := beats(2, 1, 50, 10, t0, time.Second)
	back[6].Acked = 40
	if a := CheckGuestCounter("vm", back); len(a) != 1 || !strings.Contains(a[0].Detail, "went back") {
		t.Fatalf("counter going back: %v", a)
	}
}

func TestCheckVMProgress(t *testing.T) {
	if a := CheckVMProgress([]VMObs{{VM: "a", Progress: true}}); len(a) != 0 {
		t.Fatal(a)
	}
	if a := CheckVMProgress([]VMObs{{VM: "a", Before: 9, Waited: 90 * time.Second}}); len(a) != 1 || !strings.Contains(a[0].Detail, "beyond counter 9") {
		t.Fatal(a)
	}
}

func TestVMTrail(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	samples := []DomainSample{
		{Node: "n2", Domain: "vm", ID: 3, Running: true, Before: at(2)},
		{Node: "n1", Domain: "vm", ID: 1, Running: true, Before: at(0)},
		{Node: "n1", Domain: "vm", ID: 1, Running: true, Before: at(1)},
		{Node: "n1", Domain: "vm", ID: -1, Before: at(2)},
		{Node: "n2", Domain: "vm", ID: 3, Running: true, Before: at(3)},
		{Node: "n2", Domain: "other", ID: 9, Running: true, Before: at(3)},
		{Node: "n2", Domain: "vm", ID: 4, Running: true, Before: at(5)},
	}
	if got := vmTrail(samples, "vm"); got != "n1#1 n2#3 n2#4" {
		t.Fatalf("trail %q", got)
	}
}

func TestDecodeEvents(t *testing.T) {
	out := `{"seq": "4", "kind": "vm-restarted", "node": "n1", "vm": "s1-vm0"}
{"seq": "5", "kind": "vm-restart-given-up", "node": "n1", "vm": "s1-vm0", "detail": "shut-off again after 3 restarts within 10m0s"}
`
	evs, err := decodeEvents([]byte(out))
	if err != nil || len(evs) != 2 || evs[1].GetKind() != "vm-restart-given-up" || evs[1].GetVm() != "s1-vm0" || evs[1].GetSeq() != 5 {
		t.Fatalf("%v %v", evs, err)
	}
}
