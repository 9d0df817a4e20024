package ha

import (
	"strings"
	"testing"
	"time"
)

func TestTimingFromConfig(t *testing.T) {
	got, err := TimingFrom(map[string]string{KeyDead: "5s", KeyHeartbeat: "1s", KeySuspect: "2s"})
	if err != nil || got.DeadTimeout != 5*time.Second || got.HeartbeatInterval != time.Second || got.SelfFenceLease != DefaultTiming().SelfFenceLease {
		t.Fatalf("TimingFrom: %+v %v", got, err)
	}
	if _, err := TimingFrom(map[string]string{KeyDead: "soon"}); err == nil || !strings.Contains(err.Error(), KeyDead) {
		t.Fatalf("bad duration: %v", err)
	}
	if _, err := TimingFrom(map[string]string{KeyDead: "1s"}); err == nil {
		t.Fatal("dead timeout shorter than suspect accepted")
	}
	if err := DefaultTiming().Validate(); err != nil {
		t.Fatal(err)
	}
	if !Armed(nil) || Armed(map[string]string{KeyArmed: "false"}) {
		t.Fatal("armed switch")
	}
}

func TestDetector(t *testing.T) {
	tm := DefaultTiming()
	t0 := time.Unix(1000, 0)
	d := NewDetector(tm, t0, []string{"a", "b"})
	if tr := d.Tick(t0.Add(time.Second)); len(tr) != 0 {
		t.Fatalf("early transitions: %v", tr)
	}
	d.Seen("a", t0.Add(1400*time.Millisecond))
	// b is silent past the suspect timeout; a answered.
	tr := d.Tick(t0.Add(1600 * time.Millisecond))
	if len(tr) != 1 || tr[0].Node != "b" || tr[0].To != Suspect {
		t.Fatalf("suspect: %v", tr)
	}
	// A pause shorter than the dead timeout never kills a node.
	d.Seen("b", t0.Add(2900*time.Millisecond))
	d.Seen("a", t0.Add(2900*time.Millisecond))
	tr = d.Tick(t0.Add(3 * time.Second))
	if len(tr) != 1 || tr[0].To != Alive {
		t.Fatalf("back: %v", tr)
	}
	d.Seen("b", t0.Add(5*time.Second))
	tr = d.Tick(t0.Add(6 * time.Second))
	if len(tr) != 1 || tr[0].Node != "a" || tr[0].To != Dead {
		t.Fatalf("dead: %v", tr)
	}
	if s, last, _ := d.State("a"); s != Dead || !last.Equal(t0.Add(2900*time.Millisecond)) {
		t.Fatalf("state a: %v %v", s, last)
	}
	// Out-of-order answers never move lastSeen back.
	d.Seen("a", t0)
	if _, last, _ := d.State("a"); !last.Equal(t0.Add(2900 * time.Millisecond)) {
		t.Fatal("lastSeen moved back")
	}
	d.SetNodes(t0.Add(6*time.Second), []string{"b", "c"})
	if _, _, ok := d.State("a"); ok {
		t.Fatal("removed node kept")
	}
	if s, _, ok := d.State("c"); !ok || s != Alive {
		t.Fatal("new node not alive")
	}
}

func TestLease(t *testing.T) {
	tm := DefaultTiming()
	t0 := time.Unix(1000, 0)
	l := NewLease(tm, t0)
	// A leader ping without recent quorum does not renew (stale leader in
	// a minority).
	if l.LeaderPing(t0.Add(time.Second)) {
		t.Fatal("renewed without quorum")
	}
	l.QuorumOK(t0.Add(2*time.Second), false)
	if !l.LeaderPing(t0.Add(2200 * time.Millisecond)) {
		t.Fatal("not renewed with quorum")
	}
	if l.LeaderPing(t0.Add(3 * time.Second)) {
		t.Fatal("renewed on quorum older than a heartbeat interval")
	}
	if l.Expired(t0.Add(6 * time.Second)) {
		t.Fatal("expired early")
	}
	if !l.Expired(t0.Add(6300 * time.Millisecond)) {
		t.Fatal("not expired after the lease")
	}
	// The cluster's view: the last answer plus lease, interval, drift, grace
	// is never before the node's own expiry.
	lastAnswer := t0.Add(2200 * time.Millisecond)
	if exp := tm.LeaseExpiry(lastAnswer, 4*time.Millisecond); !exp.After(l.Renewed().Add(tm.SelfFenceLease)) {
		t.Fatalf("cluster expiry %v before the node's %v", exp, l.Renewed().Add(tm.SelfFenceLease))
	}
	// A ping without a recent proof counts once a check that starts within
	// an interval after it succeeds, as of the ping; one that starts later
	// does not.
	l = NewLease(tm, t0)
	l.QuorumOK(t0, false)
	if l.LeaderPing(t0.Add(1500 * time.Millisecond)) {
		t.Fatal("renewed on a proof three intervals old")
	}
	l.QuorumOK(t0.Add(1800*time.Millisecond), false)
	if !l.Renewed().Equal(t0.Add(1500 * time.Millisecond)) {
		t.Fatalf("renewed at %v, want as of the ping (%v)", l.Renewed(), t0.Add(1500*time.Millisecond))
	}
	l.LeaderPing(t0.Add(3 * time.Second))
	l.QuorumOK(t0.Add(3600*time.Millisecond), false)
	if !l.Renewed().Equal(t0.Add(1500 * time.Millisecond)) {
		t.Fatal("renewed on a check that started more than an interval after the ping")
	}
	l.QuorumOK(t0.Add(3100*time.Millisecond), false) // the pending ping was dropped
	if !l.Renewed().Equal(t0.Add(1500 * time.Millisecond)) {
		t.Fatal("a dropped ping renewed the lease")
	}
	// A check that started before the ping and ended after it counts too.
	l.LeaderPing(t0.Add(5 * time.Second))
	l.QuorumOK(t0.Add(4700*time.Millisecond), false)
	if !l.Renewed().Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("renewed at %v, want the ping at 5s", l.Renewed())
	}
	// The leader renews on quorum alone.
	l.QuorumOK(t0.Add(7*time.Second), true)
	if l.Expired(t0.Add(8 * time.Second)) {
		t.Fatal("leader lease not renewed")
	}
}
