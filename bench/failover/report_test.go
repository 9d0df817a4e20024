package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestDistNearestRank(t *testing.T) {
	xs := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	d := dist(xs)
	if d.N != 10 || d.Min != 1 || d.Max != 10 || d.P50 != 5 || d.P95 != 10 || d.Mean != 5.5 {
		t.Fatalf("dist = %+v", d)
	}
	if xs[0] != 10 {
		t.Fatal("dist sorted its input in place")
	}
	if d := dist(nil); d.N != 0 {
		t.Fatalf("dist(nil) = %+v", d)
	}
	if d := dist([]float64{42}); d.P50 != 42 || d.P95 != 42 {
		t.Fatalf("one sample: %+v", d)
	}
}

func runWith(n int, ph map[string]float64) Run {
	return Run{N: n, Crashed: "n1", PhasesMs: ph, I2: "ok"}
}

func TestSummarizeAndGoal(t *testing.T) {
	var runs []Run
	for i := range 10 {
		runs = append(runs, runWith(i+1, map[string]float64{PhaseDead: 3000, PhaseStarted: float64(4000 + 100*i), PhaseFirst: float64(9000 + 100*i)}))
	}
	ps := summarizePhases(runs)
	if len(ps) != len(phases) {
		t.Fatalf("%d phase summaries, want %d", len(ps), len(phases))
	}
	if s := phaseOf(ps, PhaseStarted); s.N != 10 || s.P50 != 4400 || s.Max != 4900 {
		t.Fatalf("started: %+v", s)
	}
	if s := phaseOf(ps, PhasePromoted); s.N != 0 {
		t.Fatalf("promoted was never observed: %+v", s)
	}
	g := evaluateGoal(ps, len(runs))
	if g.Verdict != "PASS" || g.StretchVerdict != "PASS" {
		t.Fatalf("goal %+v", g)
	}
	// Over 5 s: the goal passes, the stretch does not.
	for i := range runs {
		runs[i].PhasesMs[PhaseStarted] += 2000
	}
	g = evaluateGoal(summarizePhases(runs), len(runs))
	if g.Verdict != "PASS" || g.StretchVerdict != "FAIL" {
		t.Fatalf("goal at 6.4 s: %+v", g)
	}
	// A run that never recovered fails the goal whatever the p50.
	delete(runs[3].PhasesMs, PhaseStarted)
	g = evaluateGoal(summarizePhases(runs), len(runs))
	if g.Verdict != "FAIL" || g.N != 9 {
		t.Fatalf("goal with an unrecovered run: %+v", g)
	}
	if g := evaluateGoal(summarizePhases(nil), 0); g.Verdict != "NOT MEASURED" {
		t.Fatalf("no runs: %+v", g)
	}
}

func ev(seq uint64, t0 time.Time, atMs int, kind, node, vm, detail string) *tandemv1.Event {
	return &tandemv1.Event{Seq: seq, At: timestamppb.New(t0.Add(time.Duration(atMs) * time.Millisecond)), By: "n2", Kind: kind, Node: node, Vm: vm, Detail: detail}
}

func TestFromEvents(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	evs := []*tandemv1.Event{
		ev(10, t0, 1500, "node-suspected", "n1", "", "alive -> suspect; last answer 1.505s ago"),
		ev(11, t0, 3100, "node-dead", "n1", "", "suspect -> dead"),
		ev(12, t0, 3300, "fence-result", "n1", "", "fencing n1 not confirmed: timeout"),
		ev(13, t0, 3600, "fence-result", "n1", "", "confirmed by ipmi: power is off"),
		ev(14, t0, 3700, "node-dead", "n3", "", "another node"),
		ev(15, t0, 3900, "promotion", "n2", "fo1", "volume fo1-disk0 promoted on n2"),
		ev(16, t0, 4400, "vm-recovered", "n2", "fo1", "restarted on n2 (was on n1)"),
		ev(17, t0, 4500, "vm-recovered", "n3", "other", "another VM"),
	}
	res := fromEvents(evs, "n1", "fo1", t0)
	want := map[string]float64{PhaseSuspected: 1500, PhaseDead: 3100, PhaseFenced: 3600, PhasePromoted: 3900, PhaseStarted: 4400}
	for k, v := range want {
		if res.phases[k] != v {
			t.Errorf("%s = %v, want %v", k, res.phases[k], v)
		}
	}
	if len(res.phases) != len(want) {
		t.Errorf("phases %v", res.phases)
	}
	if !res.haveLastAnswer || res.lastAnswerMs != -5 {
		t.Fatalf("last answer at %v ms (%v), want -5", res.lastAnswerMs, res.haveLastAnswer)
	}
	if res.target != "n2" || res.fenceAgent != "ipmi" || res.notConfirmed != 1 || len(res.errors) != 0 || len(res.events) != len(evs) {
		t.Fatalf("result %+v", res)
	}
	if p := orderProblems(res.phases); len(p) != 0 {
		t.Fatalf("order problems in a correct recovery: %v", p)
	}

	// A failed recovery is an error, and so is the lack of vm-recovered.
	res = fromEvents([]*tandemv1.Event{ev(1, t0, 3000, "node-dead", "n1", "", ""), ev(2, t0, 9000, "vm-recovery-failed", "n1", "fo1", "no node can run fo1")}, "n1", "fo1", t0)
	if len(res.errors) != 2 || !strings.Contains(strings.Join(res.errors, "\n"), "no node can run fo1") {
		t.Fatalf("errors %v", res.errors)
	}
}

func TestOrderProblems(t *testing.T) {
	ok := map[string]float64{PhaseSuspected: 1, PhaseDead: 2, PhaseFenced: 3, PhasePromoted: 4, PhaseLaunched: 5, PhaseStarted: 6, PhaseAnnounced: 7, PhaseFirst: 8}
	if p := orderProblems(ok); len(p) != 0 {
		t.Fatal(p)
	}
	// QEMU launched before the fence was confirmed: unsafe.
	bad := map[string]float64{PhaseDead: 2, PhaseFenced: 5, PhasePromoted: 6, PhaseLaunched: 4, PhaseStarted: 7}
	p := orderProblems(bad)
	if len(p) != 1 || !strings.Contains(p[0], "QEMU process launched") {
		t.Fatalf("problems %v", p)
	}
	// The VM started without a fence; promotion before death.
	p = orderProblems(map[string]float64{PhaseDead: 5, PhasePromoted: 4, PhaseStarted: 6})
	if len(p) != 3 {
		t.Fatalf("problems %v", p)
	}
}

func TestQEMULaunchAndDiskCounter(t *testing.T) {
	log := "2026-11-22 02:40:00.100+0000: starting up libvirt version: 9.0.0\nLC_ALL=C \\\n" +
		"2026-11-22 02:40:30.000+0000: shutting down, reason=destroyed\n" +
		"2026-11-22 02:47:56.166+0000: starting up libvirt version: 9.0.0, qemu version: 7.2\n"
	t0 := time.Date(2026, 11, 22, 2, 47, 50, 0, time.UTC)
	at, ok := qemuLaunch(log, t0)
	if !ok || !at.Equal(time.Date(2026, 11, 22, 2, 47, 56, 166e6, time.UTC)) {
		t.Fatalf("launch %v %v", at, ok)
	}
	if _, ok := qemuLaunch(log, t0.Add(time.Hour)); ok {
		t.Fatal("a launch before t0 was taken")
	}
	console := `time=2026-11-22T02:47:34.774Z level=INFO msg="disk counter" agent=tandem-guest disk=/dev/vda counter=0 boot=0
time=2026-11-22T02:49:10.494Z level=INFO msg="network up" agent=tandem-guest iface=eth0
time=2026-11-22T02:50:10.494Z level=INFO msg="disk counter" agent=tandem-guest disk=/dev/vda counter=12345 boot=1
`
	if c, ok := vmbench.DiskCounter(console, 1); !ok || c != 12345 {
		t.Fatalf("boot 1: %d %v", c, ok)
	}
	if c, ok := vmbench.DiskCounter(console, 0); !ok || c != 0 {
		t.Fatalf("boot 0: %d %v", c, ok)
	}
	if _, ok := vmbench.DiskCounter(console, 2); ok {
		t.Fatal("boot 2 found")
	}
	if d, ok := lastAnswer("suspect -> dead; last answer 3.016s ago"); !ok || d != 3016*time.Millisecond {
		t.Fatalf("lastAnswer %v %v", d, ok)
	}
	if _, ok := lastAnswer("no duration"); ok {
		t.Fatal("lastAnswer without a duration")
	}
	if a, ok := confirmedBy("confirmed by lease: expired at ..."); !ok || a != "lease" {
		t.Fatalf("confirmedBy %q %v", a, ok)
	}
}

// frame builds an Ethernet frame for the capture tests.
func frame(t *testing.T, ls ...gopacket.SerializableLayer) gopacket.Packet {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return gopacket.NewPacket(buf.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
}

func TestClassify(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	vmIP := netip.MustParseAddr("10.98.0.70")
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{10, 98, 0, 70}, DstIP: net.IP{10, 98, 0, 1}}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9999}
	_ = udp.SetNetworkLayerForChecksum(ip)
	d := guest.Datagram{Boot: 3, Seq: 77, Acked: 1234, Mono: time.Second}
	p := frame(t, eth, ip, udp, gopacket.Payload(d.Encode()))
	if !relevant(p, 9999) || relevant(p, 9998) {
		t.Fatal("filter")
	}
	kind, got, _ := classify(p, 9999, vmIP)
	if kind != frameDatagram || got != d {
		t.Fatalf("classify datagram: %d %+v", kind, got)
	}
	bad := frame(t, eth, ip, udp, gopacket.Payload([]byte("not a heartbeat")))
	if kind, _, _ := classify(bad, 9999, vmIP); kind != frameMalformed {
		t.Fatalf("garbage to the port: kind %d", kind)
	}
	dns := &layers.UDP{SrcPort: 1, DstPort: 53}
	_ = dns.SetNetworkLayerForChecksum(ip)
	other := frame(t, eth, ip, dns, gopacket.Payload(d.Encode()))
	if kind, _, _ := classify(other, 9999, vmIP); kind != frameOther {
		t.Fatalf("other port: kind %d", kind)
	}
	// A gratuitous ARP request for the guest's address.
	arpEth := &layers.Ethernet{SrcMAC: mac, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: mac, SourceProtAddress: vmIP.AsSlice(), DstHwAddress: make([]byte, 6), DstProtAddress: vmIP.AsSlice()}
	ap := frame(t, arpEth, arp)
	if !relevant(ap, 9999) {
		t.Fatal("ARP filtered out")
	}
	kind, _, a := classify(ap, 9999, vmIP)
	if kind != frameAnnouncement || a.MAC.String() != mac.String() {
		t.Fatalf("classify ARP: %d %+v", kind, a)
	}
	if kind, _, _ := classify(ap, 9999, netip.MustParseAddr("10.98.0.71")); kind != frameOther {
		t.Fatal("announcement of another address taken")
	}
}

func TestAroundCrash(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ds := []Stamped{
		{Datagram: guest.Datagram{Boot: 1, Seq: 900, Acked: 5}, At: at(-50000)}, // an earlier boot
		{Datagram: guest.Datagram{Boot: 2, Seq: 10, Acked: 100}, At: at(-20)},
		{Datagram: guest.Datagram{Boot: 2, Seq: 11, Acked: 103}, At: at(-10)},
		{Datagram: guest.Datagram{Boot: 3, Seq: 4, Acked: 130}, At: at(9000)},
		{Datagram: guest.Datagram{Boot: 3, Seq: 5, Acked: 140}, At: at(9010)},
	}
	s := aroundCrash(ds, 2, at(5))
	if !s.HaveOld || s.LastOld.Seq != 11 || s.MaxAcked != 103 || !s.HaveFirst || s.First.Seq != 4 || s.StaleAfter != 0 {
		t.Fatalf("around %+v", s)
	}
	// The old guest still sending after the kill.
	ds = append(ds, Stamped{Datagram: guest.Datagram{Boot: 2, Seq: 12, Acked: 104}, At: at(2000)})
	if s := aroundCrash(ds, 2, at(5)); s.StaleAfter != 1 || s.MaxAcked != 104 {
		t.Fatalf("stale %+v", s)
	}
}

func TestIntegrityAndMarkdown(t *testing.T) {
	c := uint64(90)
	runs := []Run{
		runWith(1, map[string]float64{PhaseDead: 3000, PhaseFenced: 3400, PhasePromoted: 3500, PhaseStarted: 4200, PhaseFirst: 9000}),
		{N: 2, Crashed: "n2", Target: "n3", PhasesMs: map[string]float64{PhaseStarted: 4000}, I2: "VIOLATED", LastAckedBefore: 100, DiskAtBoot: &c,
			OrderProblem: []string{"(d) QEMU started on the secondary at 4000 ms without any confirmed fence"}, Errors: []string{"I2 VIOLATED"},
			LogExcerpts: map[string]string{"n1/tandemd.log": "time=... level=WARN msg=x"}},
	}
	in := integrity(runs)
	if in.I2Checked != 2 || in.I2Violated != 1 || in.OrderErrors != 1 || in.Unrecovered != 1 || len(in.Problems) != 3 {
		t.Fatalf("integrity %+v", in)
	}
	rep := &Report{Date: "2026-01-01T00:00:00Z", Params: Params{Runs: 2, Settle: "2s", Rate: 100}, Runs: runs, Published: published(), Thesis: thesisMethod(),
		Timing: map[string]uint32{"dead_timeout_ms": 3000}, Tools: map[string]string{"qemu": "QEMU emulator version 7.2"}}
	rep.Phases = summarizePhases(runs)
	rep.GuestBoot, rep.StartedLeader, rep.StartedOther = derived(runs)
	rep.Goal = evaluateGoal(rep.Phases, len(runs))
	rep.Integrity = in
	md := rep.Markdown()
	for _, want := range []string{"PROBLEMS FOUND", "**VIOLATED**", "Proxmox VE HA", "vSphere HA", "VMmanager Cloud", "dead_timeout 3000 ms",
		"tcpdump", "### Run 2: n2 crashed", "n1/tandemd.log", "| 1 | n1 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// The JSON holds everything the Markdown needs (-render).
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.Markdown() != md {
		t.Error("the Markdown rendered from the JSON differs")
	}
	// A clean report says so.
	rep.Runs = runs[:1]
	rep.Phases = summarizePhases(rep.Runs)
	rep.Goal = evaluateGoal(rep.Phases, 1)
	rep.Integrity = integrity(rep.Runs)
	md = rep.Markdown()
	if !strings.Contains(md, "No problem found") || strings.Contains(md, "PROBLEMS FOUND") || !strings.Contains(md, "**PASS**") {
		t.Errorf("clean report:\n%s", md)
	}
}

func TestDerived(t *testing.T) {
	runs := []Run{
		{MetaLeader: true, DetectorRestarted: true, PhasesMs: map[string]float64{PhaseLaunched: 5000, PhaseStarted: 5300, PhaseFirst: 10500}},
		{PhasesMs: map[string]float64{PhaseLaunched: 2900, PhaseStarted: 3200, PhaseFirst: 10300}},
		{PhasesMs: map[string]float64{PhaseStarted: 3000}},
	}
	boot, leader, other := derived(runs)
	if boot.N != 2 || boot.Min != 5500 || boot.Max != 7400 {
		t.Fatalf("boot %+v", boot)
	}
	if leader.N != 1 || leader.P50 != 5300 || other.N != 2 || other.P50 != 3000 {
		t.Fatalf("leader %+v other %+v", leader, other)
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-runs", "3", "-bin", "/x"})
	if err != nil || c.runs != 3 || c.Bin != "/x" || c.rate != 100 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range [][]string{{"-runs", "0"}, {"-rate", "0"}, {"extra"}, {"-recovery-timeout", "0s"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestPartialReportRenders(t *testing.T) {
	if err := benchkit.CheckPartial(&Report{}); err != nil {
		t.Fatal(err)
	}
}
