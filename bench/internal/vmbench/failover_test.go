package vmbench

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestDistNearestRank(t *testing.T) {
	xs := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	d := Dist(xs)
	if d.N != 10 || d.Min != 1 || d.Max != 10 || d.P50 != 5 || d.P95 != 10 || d.Mean != 5.5 {
		t.Fatalf("dist = %+v", d)
	}
	if xs[0] != 10 {
		t.Fatal("dist sorted its input in place")
	}
	if d := Dist(nil); d.N != 0 {
		t.Fatalf("Dist(nil) = %+v", d)
	}
	if d := Dist([]float64{42}); d.P50 != 42 || d.P95 != 42 {
		t.Fatalf("one sample: %+v", d)
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
	res := fromEvents(evs, "n1", "fo1", "fo1-disk0", t0)
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
	if p := orderProblems(res.phases, ReplicatedPhases()); len(p) != 0 {
		t.Fatalf("order problems in a correct recovery: %v", p)
	}

	// A failed recovery is an error, and so is the lack of vm-recovered.
	res = fromEvents([]*tandemv1.Event{ev(1, t0, 3000, "node-dead", "n1", "", ""), ev(2, t0, 9000, "vm-recovery-failed", "n1", "fo1", "no node can run fo1")}, "n1", "fo1", "fo1-disk0", t0)
	if len(res.errors) != 2 || !strings.Contains(strings.Join(res.errors, "\n"), "no node can run fo1") {
		t.Fatalf("errors %v", res.errors)
	}
}

func TestOrderProblems(t *testing.T) {
	ok := map[string]float64{PhaseSuspected: 1, PhaseDead: 2, PhaseFenced: 3, PhasePromoted: 4, PhaseLaunched: 5, PhaseStarted: 6, PhaseAnnounced: 7, PhaseFirst: 8}
	if p := orderProblems(ok, ReplicatedPhases()); len(p) != 0 {
		t.Fatal(p)
	}
	// QEMU launched before the fence was confirmed: unsafe.
	bad := map[string]float64{PhaseDead: 2, PhaseFenced: 5, PhasePromoted: 6, PhaseLaunched: 4, PhaseStarted: 7}
	p := orderProblems(bad, ReplicatedPhases())
	if len(p) != 1 || !strings.Contains(p[0], "QEMU process launched") {
		t.Fatalf("problems %v", p)
	}
	// The VM started without a fence; promotion before death.
	p = orderProblems(map[string]float64{PhaseDead: 5, PhasePromoted: 4, PhaseStarted: 6}, ReplicatedPhases())
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
	if c, ok := DiskCounter(console, 1); !ok || c != 12345 {
		t.Fatalf("boot 1: %d %v", c, ok)
	}
	if c, ok := DiskCounter(console, 0); !ok || c != 0 {
		t.Fatalf("boot 0: %d %v", c, ok)
	}
	if _, ok := DiskCounter(console, 2); ok {
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
	s := AroundCrash(ds, 2, at(5))
	if !s.HaveOld || s.LastOld.Seq != 11 || s.MaxAcked != 103 || !s.HaveFirst || s.First.Seq != 4 || s.StaleAfter != 0 {
		t.Fatalf("around %+v", s)
	}
	// The old guest still sending after the kill.
	ds = append(ds, Stamped{Datagram: guest.Datagram{Boot: 2, Seq: 12, Acked: 104}, At: at(2000)})
	if s := AroundCrash(ds, 2, at(5)); s.StaleAfter != 1 || s.MaxAcked != 104 {
		t.Fatalf("stale %+v", s)
	}
}

func TestDerived(t *testing.T) {
	runs := []Run{
		{MetaLeader: true, DetectorRestarted: true, PhasesMs: map[string]float64{PhaseLaunched: 5000, PhaseStarted: 5300, PhaseFirst: 10500}},
		{PhasesMs: map[string]float64{PhaseLaunched: 2900, PhaseStarted: 3200, PhaseFirst: 10300}},
		{PhasesMs: map[string]float64{PhaseStarted: 3000}},
	}
	boot, leader, other := Derived(runs)
	if boot.N != 2 || boot.Min != 5500 || boot.Max != 7400 {
		t.Fatalf("boot %+v", boot)
	}
	if leader.N != 1 || leader.P50 != 5300 || other.N != 2 || other.P50 != 3000 {
		t.Fatalf("leader %+v other %+v", leader, other)
	}
}

// TestRBDRecovery: the takeover of an RBD disk is its own phase, between
// the fence and the promotion, and one before the fence is an order
// problem.
func TestRBDRecovery(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// A replicated disk's recovery with the RBD image's takeover before the
	// promotion, and another image's.
	evs := []*tandemv1.Event{ev(11, t0, 3100, "node-dead", "n1", "", ""), ev(12, t0, 3600, "fence-result", "n1", "", "confirmed by ipmi: power is off")}
	for i, d := range []string{"other: n3 took the RBD image tandem/other over", "rv: n2 took the RBD image tandem/rv over from n1 (epoch 3): blocklisted 10.0.0.1:0/1"} {
		evs = append(evs, ev(uint64(13+i), t0, 3700+100*i, "volume-rbd-takeover", "", "", "volume "+d))
	}
	evs = append(evs, ev(15, t0, 3900, "promotion", "n2", "fo1", "volume rv promoted on n2"), ev(16, t0, 4400, "vm-recovered", "n2", "fo1", "restarted on n2"))
	res := fromEvents(evs, "n1", "fo1", "rv", t0)
	if res.phases[PhaseTakeover] != 3800 || res.phases[PhasePromoted] != 3900 || len(res.errors) != 0 {
		t.Fatalf("phases %v, errors %v", res.phases, res.errors)
	}
	phases := RBDPhases()
	if p := orderProblems(res.phases, phases); len(p) != 0 {
		t.Fatalf("order problems in a correct recovery: %v", p)
	}
	keys := make([]string, 0, len(phases))
	for _, p := range phases {
		keys = append(keys, p.Key)
	}
	if got := strings.Join(keys, " "); got != "suspected a_dead b_fenced rbd_takeover c_promoted qemu_launched d_started announced e_first_datagram" {
		t.Fatalf("RBD phases %s", got)
	}
	p := orderProblems(map[string]float64{PhaseDead: 1, PhaseFenced: 5, PhaseTakeover: 4, PhasePromoted: 6, PhaseStarted: 7}, phases)
	if len(p) != 2 || !strings.Contains(p[0], "RBD image taken over") {
		t.Fatalf("takeover before the fence: %v", p)
	}
}

func TestDiskStates(t *testing.T) {
	up := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	v := &tandemv1.VolumeInfo{Primary: "n1", Replicas: []*tandemv1.VolumeReplica{{Node: "n1", State: up, Primary: true}, {Node: "n2", State: up}}}
	rep := ReplicatedDisk(2)
	if _, err := rep(v, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := rep(v, "n2"); err == nil {
		t.Fatal("ready on a node that is not the primary")
	}
	if _, err := ReplicatedDisk(3)(v, ""); err == nil {
		t.Fatal("ready with a replica missing")
	}
	w := &tandemv1.RBDClient{Node: "n2", Addr: "10.0.0.2:0/7"}
	r := &tandemv1.VolumeInfo{Primary: "n2", Epoch: 4, Watchers: []*tandemv1.RBDClient{w}, LockOwner: w}
	sum, err := RBDDisk()(r, "n2")
	if err != nil || sum != "owner n2 epoch 4, watchers n2@10.0.0.2:0/7, lock n2@10.0.0.2:0/7" {
		t.Fatalf("%q %v", sum, err)
	}
	if _, err := RBDDisk()(r, "n1"); err == nil {
		t.Fatal("ready on another owner")
	}
	old := &tandemv1.RBDClient{Node: "n1", Addr: "10.0.0.1:0/3"}
	r.Watchers = append(r.Watchers, old)
	if _, err := RBDDisk()(r, ""); err == nil || !strings.Contains(err.Error(), "watchers") {
		t.Fatalf("two watchers: %v", err)
	}
	r.Watchers, r.LockOwner = []*tandemv1.RBDClient{w}, old
	if _, err := RBDDisk()(r, ""); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("lock elsewhere: %v", err)
	}
}
