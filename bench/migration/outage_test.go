package main

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/guest"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// stream builds arrivals every 10 ms from t0 with Seq 1, 2, ...; gaps maps a
// sequence number to the extra delay before it arrives and skip lists
// sequence numbers that never arrive.
func stream(n int, gaps map[uint64]time.Duration, skip map[uint64]bool) []guest.Arrival {
	var out []guest.Arrival
	at := t0
	for seq := uint64(1); seq <= uint64(n); seq++ {
		at = at.Add(10*time.Millisecond + gaps[seq])
		if skip[seq] {
			continue
		}
		out = append(out, guest.Arrival{
			Datagram: guest.Datagram{Boot: 3, Seq: seq, Acked: seq / 2, Mono: time.Duration(seq) * 10 * time.Millisecond},
			At:       at,
		})
	}
	return out
}

func TestAnalyzeWindowLongestGapAndLoss(t *testing.T) {
	// Seq 50 arrives 300 ms late; 48 and 49 were lost on the way.
	arr := stream(100, map[uint64]time.Duration{50: 300 * time.Millisecond}, map[uint64]bool{48: true, 49: true})
	w, err := analyzeWindow(arr, t0.Add(200*time.Millisecond), t0.Add(900*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// 47 arrived at 470 ms, 50 at 500+300 ms: a 330 ms gap.
	if w.Longest != 330*time.Millisecond || w.LongestLost != 2 || w.Lost != 2 {
		t.Errorf("longest %v (lost %d), total lost %d; want 330ms, 2, 2", w.Longest, w.LongestLost, w.Lost)
	}
	if w.LongestStart != t0.Add(470*time.Millisecond) {
		t.Errorf("longest gap starts at %v", w.LongestStart.Sub(t0))
	}
	// Guest clock advanced 30 ms (seq 47 -> 50) across the 330 ms gap.
	if w.GuestClock != 30*time.Millisecond {
		t.Errorf("guest clock over the gap %v, want 30ms", w.GuestClock)
	}
	if w.Rebooted {
		t.Error("rebooted without a reboot")
	}
	if w.SeqBefore != 20 || w.AckedBefore != 10 {
		t.Errorf("before the window: seq %d acked %d, want 20 and 10", w.SeqBefore, w.AckedBefore)
	}
	if w.SeqAfter <= w.SeqBefore || w.AckedAfter <= w.AckedBefore {
		t.Errorf("after the window: seq %d acked %d", w.SeqAfter, w.AckedAfter)
	}
	// Around the gap: 44, 45, 46, 47 (the gap opens), 50 (closes it), 51..58.
	if len(w.Around) != 13 || w.Around[3].Seq != 47 || w.Around[3].AtMs != 0 || w.Around[4].Seq != 50 ||
		w.Around[4].AtMs != 330 || w.Around[4].GuestMs != 30 || w.Around[0].AtMs != -30 {
		t.Errorf("around the gap: %+v", w.Around)
	}
	// Acked is Seq/2: stays on 23 from seq 46 (460 ms) until 50 brings 25.
	if w.AckStall != 340*time.Millisecond {
		t.Errorf("ack stall %v, want 340ms", w.AckStall)
	}
}

func TestAnalyzeWindowEdges(t *testing.T) {
	arr := stream(100, map[uint64]time.Duration{30: 200 * time.Millisecond, 80: 500 * time.Millisecond}, nil)
	// Seq 29 at 290 ms, 30 at 500 ms. A window starting inside that gap
	// counts it in full; the larger gap before seq 80 lies after it.
	w, err := analyzeWindow(arr, t0.Add(400*time.Millisecond), t0.Add(700*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if w.Longest != 210*time.Millisecond {
		t.Errorf("gap straddling the start: %v, want 210ms", w.Longest)
	}
	// A window that ends inside the later gap counts it in full too.
	w, err = analyzeWindow(arr, t0.Add(600*time.Millisecond), t0.Add(1100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if w.Longest != 510*time.Millisecond {
		t.Errorf("gap straddling the end: %v, want 510ms", w.Longest)
	}
	// Nothing after the window yet.
	if _, err := analyzeWindow(arr, t0.Add(time.Second), t0.Add(time.Hour)); !errors.Is(err, errStreamOpen) {
		t.Errorf("open stream: %v, want errStreamOpen", err)
	}
	if _, err := analyzeWindow(arr, t0.Add(time.Second), t0); err == nil {
		t.Error("reversed window accepted")
	}
	// A window before the first arrival starts with it.
	if w, err := analyzeWindow(arr, t0.Add(-time.Second), t0.Add(50*time.Millisecond)); err != nil || w.Longest != 10*time.Millisecond || w.Received != 5 {
		t.Errorf("window before the stream: %+v, %v", w, err)
	}
}

func TestAnalyzeWindowReboot(t *testing.T) {
	arr := stream(50, nil, nil)
	for i := 30; i < len(arr); i++ {
		arr[i].Boot = 4
		arr[i].Seq = uint64(i - 29)
	}
	w, err := analyzeWindow(arr, t0.Add(200*time.Millisecond), t0.Add(400*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if !w.Rebooted {
		t.Error("reboot not detected")
	}
	if w.Lost != 0 {
		t.Errorf("lost %d across a reboot, want 0 (sequence restarted)", w.Lost)
	}
	c := continuity(arr)
	if c.OK() || len(c.Boots) != 2 {
		t.Errorf("continuity across a reboot: %+v", c)
	}
	// Rates cover the first run: seq 1..30 over 290 ms of both clocks.
	if math.Abs(c.GuestRate-100) > 1e-9 || math.Abs(c.ReceiveRate-100) > 1e-9 {
		t.Errorf("rates across a reboot: guest %v, receive %v; want 100", c.GuestRate, c.ReceiveRate)
	}
}

func TestContinuity(t *testing.T) {
	arr := stream(101, nil, nil)
	c := continuity(arr)
	if !c.OK() || c.Datagrams != 101 || c.SeqFirst != 1 || c.SeqLast != 101 || c.AckedLast != 50 {
		t.Errorf("continuity: %+v", c)
	}
	if math.Abs(c.GuestRate-100) > 1e-9 || math.Abs(c.ReceiveRate-100) > 1e-9 {
		t.Errorf("rates: guest %v, receive %v; want 100", c.GuestRate, c.ReceiveRate)
	}
	arr[60].Acked = 1
	if c := continuity(arr); c.OK() || c.AckedBackwards != 1 {
		t.Errorf("acked counter going back not detected: %+v", c)
	}
}

func TestDist(t *testing.T) {
	var xs []float64
	for i := 20; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	d := distOf(xs)
	if d.N != 20 || d.Min != 1 || d.Max != 20 || d.P50 != 10.5 || math.Abs(d.P95-19.05) > 1e-9 || d.Mean != 10.5 {
		t.Errorf("dist of 1..20: %+v", d)
	}
	if math.Abs(d.Std-math.Sqrt(35)) > 1e-9 {
		t.Errorf("std %v, want sqrt(35)", d.Std)
	}
	if xs[0] != 20 {
		t.Error("distOf sorted its input")
	}
	if d := distOf(nil); d.N != 0 || d.P50 != 0 {
		t.Errorf("empty dist: %+v", d)
	}
	if d := distOf([]float64{42}); d.P50 != 42 || d.P95 != 42 || d.Std != 0 {
		t.Errorf("single sample: %+v", d)
	}
}

func TestSummarizeAndGoal(t *testing.T) {
	ms := []Migration{
		{OutageMs: 80, TotalMs: 4000, DowntimeMs: 60, Lost: 1, WallMs: 4500},
		{OutageMs: 120, TotalMs: 5000, DowntimeMs: 0, Lost: 0, WallMs: 5500},
		{OutageMs: 90, TotalMs: 4500, DowntimeMs: 70, Lost: 3, WallMs: 5000},
		{OutageMs: 1, Error: "migration failed"},
		{Error: "guest rebooted", Rebooted: true},
		{Error: "silent", Diagnosis: &Diagnosis{Poked: true}},
		{Error: "silent until poked", Diagnosis: &Diagnosis{Poked: true, ResumedAfterPoke: true}},
	}
	s := summarize(ms, 100)
	if s.Migrations != 7 || s.Succeeded != 3 || s.Failed != 4 || s.GuestCrashed != 1 || s.GuestHung != 1 || s.GuestStalled != 1 {
		t.Errorf("counts: %+v", s)
	}
	if s.OutageMs.P50 != 90 || s.TotalMs.P50 != 4500 || s.LostTotal != 4 || s.Lost.Max != 3 {
		t.Errorf("summary: outage %+v total %+v lost %d", s.OutageMs, s.TotalMs, s.LostTotal)
	}
	if s.DowntimeMs.N != 2 || s.DowntimeUnknown != 1 || s.DowntimeMs.P50 != 65 {
		t.Errorf("downtime: %+v, unknown %d", s.DowntimeMs, s.DowntimeUnknown)
	}
	// 4 lost over 3 migrations at 10 ms each.
	if math.Abs(s.LossOutageMs-40.0/3) > 1e-9 {
		t.Errorf("loss-based outage %v", s.LossOutageMs)
	}

	slow := summarize([]Migration{{OutageMs: 150}, {OutageMs: 250}}, 1000)
	g := evaluateGoal([]RateRun{{Rate: 100, Summary: s}, {Rate: 1000, Summary: slow}})
	if g.Verdict != "FAIL" || len(g.PerRate) != 2 || !g.PerRate[0].Met || g.PerRate[1].Met || g.PerRate[1].P50Ms != 200 {
		t.Errorf("goal: %+v", g)
	}
	if g := evaluateGoal([]RateRun{{Rate: 100, Summary: s}}); g.Verdict != "PASS" {
		t.Errorf("goal with one passing rate: %+v", g)
	}
	if g := evaluateGoal([]RateRun{{Rate: 100, Summary: s}, {Rate: 1000}}); g.Verdict != "FAIL" {
		t.Errorf("goal with an unmeasured rate: %+v", g)
	}
	if g := evaluateGoal(nil); g.Verdict != "NOT MEASURED" {
		t.Errorf("goal without runs: %+v", g)
	}
}

func TestMarkdownRenders(t *testing.T) {
	s := summarize([]Migration{{OutageMs: 80, TotalMs: 4000}}, 100)
	ctl := []Migration{{N: 1, From: "n1", To: "n2", OutageMs: 60}, {N: 2, From: "n2", To: "n1", Rebooted: true, Error: "guest rebooted"}}
	rep := &Report{
		Params: Params{Rates: []int{100}, Migrations: 1, Quiet: "10s", Settle: "1s", Control: true, ControlMigrations: 2},
		Runs: []RateRun{
			{Rate: 100, VM: "mig100", Summary: s, Stream: Continuity{Boots: []uint64{1}},
				Migrations: []Migration{{N: 1, From: "n1", To: "n2", OutageMs: 80, TotalMs: 4000, Error: "a | b"}}},
			{Rate: 100, VM: "mig100-nodisk", Diskless: true, Summary: summarize(ctl, 100), Migrations: ctl},
		},
	}
	rep.Goal = evaluateGoal(rep.Runs)
	rep.Thesis = thesisReference()
	md := rep.Markdown()
	if len(rep.Goal.PerRate) != 1 {
		t.Errorf("the control counts towards the goal: %+v", rep.Goal)
	}
	for _, want := range []string{"**PASS**", "80.0 ms", `a \| b`, "libvirt downtime of 0", "Braastad 2006", "100/s, no disk (control)",
		"a difference of +20 ms", "also breaks without a disk", "By destination node: n1: 1."} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

func TestWaitAfter(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skipf("no loopback UDP: %v", err)
	}
	defer conn.Close()
	rx := guest.NewReceiver(conn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := rx.Start(ctx)
	defer func() { _ = stop() }()
	out, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// A diskless guest (boot 0) sends 1..5, restarts, sends 1..3.
	for i, seq := range []uint64{1, 2, 3, 4, 5, 1, 2, 3} {
		if _, err := out.Write(guest.Datagram{Seq: seq}.Encode()); err != nil {
			t.Fatal(err)
		}
		// Keep the order on the wire: wait until the receiver has read
		// this one. Count arrivals rather than match the content, since
		// after the restart the same Seq was already received once.
		for received(rx) < i+1 {
			if ctx.Err() != nil {
				t.Fatalf("datagram %d not received: %v", i+1, ctx.Err())
			}
			time.Sleep(time.Millisecond)
		}
	}
	var from guest.Datagram
	d, err := waitAfter(ctx, rx, 2, func(prev, d guest.Datagram) bool { from = prev; return restarted(prev, d) })
	if err != nil || d.Seq != 1 || from.Seq != 5 {
		t.Errorf("restart after skipping 2: %+v after %+v, %v", d, from, err)
	}
	if d, err := waitAfter(ctx, rx, 6, anyDatagram); err != nil || d.Seq != 2 {
		t.Errorf("first after skipping 6: %+v, %v", d, err)
	}
	if n := received(rx); n != 8 {
		t.Errorf("received %d, want 8", n)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := waitAfter(short, rx, 8, anyDatagram); err == nil {
		t.Error("waitAfter found a datagram beyond the last one")
	}
}

func TestDiskCounterAtBoot(t *testing.T) {
	consoles := map[string]string{
		"n1": `time=2026-11-22T03:13:11.606Z level=INFO msg="disk counter" agent=tandem-guest disk=/dev/vda counter=0 boot=0`,
		"n2": "[   15.369073] Kernel panic - not syncing: Fatal exception in interrupt\n" +
			`time=2026-11-22T03:13:30.788Z level=INFO msg="disk counter" agent=tandem-guest disk=/dev/vda counter=851 boot=1` + "\n",
	}
	if c, ok := diskCounterAtBoot(consoles, 1); !ok || c != 851 {
		t.Errorf("boot 1: %d, %v; want 851", c, ok)
	}
	if c, ok := diskCounterAtBoot(consoles, 0); !ok || c != 0 {
		t.Errorf("boot 0: %d, %v; want 0", c, ok)
	}
	if _, ok := diskCounterAtBoot(consoles, 2); ok {
		t.Error("found a counter for a boot that never happened")
	}
}

func TestPartialReportRenders(t *testing.T) {
	if err := benchkit.CheckPartial(&Report{}); err != nil {
		t.Fatal(err)
	}
}
