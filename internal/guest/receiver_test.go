package guest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// loopback returns a receiving conn on 127.0.0.1 and a sender to it.
func loopback(t *testing.T) (recv, send *net.UDPConn) {
	t.Helper()
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	send, err = net.DialUDP("udp4", nil, recv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close() })
	return recv, send
}

func startReceiver(t *testing.T, conn *net.UDPConn) *Receiver {
	t.Helper()
	r := NewReceiver(conn, nil)
	stop := r.Start(context.Background())
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	return r
}

func TestReceiverRecordsAndWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recv, send := loopback(t)
	r := startReceiver(t, recv)
	if _, _, ok := r.Last(); ok {
		t.Fatal("Last reports a datagram before any was sent")
	}

	if _, err := send.Write([]byte("not a datagram")); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if _, err := send.Write(Datagram{Seq: seq, Acked: seq * 10}.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	d, err := r.WaitFor(ctx, func(d Datagram) bool { return d.Seq == 5 })
	if err != nil {
		t.Fatal(err)
	}
	if d.Acked != 50 {
		t.Fatalf("got %+v, want Acked 50", d)
	}
	// History counts: the first datagram already arrived.
	if d, err := r.WaitFor(ctx, func(d Datagram) bool { return true }); err != nil || d.Seq != 1 {
		t.Fatalf("first datagram: %+v, %v", d, err)
	}
	last, at, ok := r.Last()
	if !ok || last.Seq != 5 || at.IsZero() {
		t.Fatalf("Last = %+v, %v, %v", last, at, ok)
	}
	if got := r.Malformed(); got != 1 {
		t.Fatalf("Malformed = %d, want 1", got)
	}

	// A datagram sent after WaitFor began wakes it.
	done := make(chan Datagram, 1)
	go func() {
		d, err := r.WaitFor(ctx, func(d Datagram) bool { return d.Seq == 6 })
		if err != nil {
			t.Error(err)
		}
		done <- d
	}()
	if _, err := send.Write(Datagram{Seq: 6}.Encode()); err != nil {
		t.Fatal(err)
	}
	if d := <-done; d.Seq != 6 {
		t.Fatalf("woken with %+v", d)
	}

	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := r.WaitFor(short, func(d Datagram) bool { return d.Seq == 99 }); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor on a cancelled context: %v", err)
	}
}

func TestReceiverStopLeavesConnOpen(t *testing.T) {
	recv, send := loopback(t)
	r := NewReceiver(recv, nil)
	stop := r.Start(context.Background())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The caller still owns the conn: a second Receiver can use it.
	r2 := startReceiver(t, recv)
	if _, err := send.Write(Datagram{Seq: 1}.Encode()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r2.WaitFor(ctx, func(d Datagram) bool { return d.Seq == 1 }); err != nil {
		t.Fatal(err)
	}
}

// Outage arithmetic works on arrival times, so it is tested on synthetic
// arrivals rather than on a clock.
func TestOutages(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	arr := []Arrival{
		{Datagram{Seq: 1}, ms(0)},
		{Datagram{Seq: 2}, ms(10)},
		{Datagram{Seq: 3}, ms(20)},
		// 400 ms migration downtime, 39 datagrams lost.
		{Datagram{Seq: 43}, ms(420)},
		{Datagram{Seq: 44}, ms(430)},
		// Reboot: boot 1, the first 5 of the new boot lost.
		{Datagram{Boot: 1, Seq: 6}, ms(2430)},
		{Datagram{Boot: 1, Seq: 7}, ms(2440)},
	}
	got := outages(arr, 100*time.Millisecond)
	want := []Outage{
		{Start: ms(20), End: ms(420), Gap: 400 * time.Millisecond, LostSeqs: 39},
		{Start: ms(430), End: ms(2430), Gap: 2 * time.Second, LostSeqs: 5, Rebooted: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d outages %+v, want %+v", len(got), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("outage %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := len(outages(arr, 10*time.Millisecond)); n != 6 {
		t.Errorf("minGap 10ms: %d outages, want every interval (6)", n)
	}
	if o := outages(arr[:1], 0); o != nil {
		t.Errorf("one arrival: %+v", o)
	}
	// A seq going backwards without a disk (Boot stays 0) is a restart.
	restart := outages([]Arrival{{Datagram{Seq: 50}, ms(0)}, {Datagram{Seq: 2}, ms(500)}}, 0)
	if len(restart) != 1 || !restart[0].Rebooted || restart[0].LostSeqs != 1 {
		t.Errorf("restart without disk: %+v", restart)
	}
}

func TestLongestOutageOverLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recv, send := loopback(t)
	r := startReceiver(t, recv)
	if _, ok := r.LongestOutage(); ok {
		t.Fatal("outage reported with no datagrams")
	}
	for _, seq := range []uint64{1, 2, 7} {
		if _, err := send.Write(Datagram{Seq: seq}.Encode()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.WaitFor(ctx, func(d Datagram) bool { return d.Seq == seq }); err != nil {
			t.Fatal(err)
		}
	}
	o, ok := r.LongestOutage()
	if !ok {
		t.Fatal("no outage")
	}
	// Which interval is longest depends on scheduling; the arithmetic must
	// hold for whichever it is.
	if o.Gap != o.End.Sub(o.Start) || o.Gap < 0 {
		t.Fatalf("inconsistent outage %+v", o)
	}
	all := r.Outages(0)
	if len(all) != 2 || all[0].LostSeqs != 0 || all[1].LostSeqs != 4 {
		t.Fatalf("outages %+v, want 2 with 0 and 4 lost", all)
	}
}
