package chaos

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func write(vol string, block, gen uint64, from, to int, res Outcome, node string, epoch uint64) Op {
	return Op{Kind: OpWrite, Volume: vol, Block: block, Gen: gen, Invoke: at(from), Complete: at(to), Result: res, Node: node, Epoch: epoch}
}

func read(vol string, block uint64, data []byte, from, to int, node string) Op {
	s, st := Decode(data)
	op := Op{Kind: OpRead, Volume: vol, Block: block, Gen: s.Gen, State: string(st), Invoke: at(from), Complete: at(to), Result: OK, Node: node}
	if st == BlockStamped {
		op.Seen = &s
	}
	return op
}

func stamp(vol string, block, gen uint64) []byte {
	return Stamp{Volume: vol, Block: block, Gen: gen}.Encode()
}

func wantAnomaly(t *testing.T, as []Anomaly, substr string) {
	t.Helper()
	for _, a := range as {
		if strings.Contains(a.String(), substr) {
			return
		}
	}
	t.Fatalf("no anomaly mentioning %q in %v", substr, as)
}

func TestStampRoundTripAndTorn(t *testing.T) {
	b := stamp("v1", 7, 3)
	s, st := Decode(b)
	if st != BlockStamped || s.Volume != "v1" || s.Block != 7 || s.Gen != 3 {
		t.Fatalf("decode: %v %v", s, st)
	}
	if _, st := Decode(make([]byte, BlockSize)); st != BlockZero {
		t.Fatalf("zero block: %v", st)
	}
	// A torn write: the first half of generation 4 over generation 3.
	torn := append(append([]byte(nil), stamp("v1", 7, 4)[:2048]...), b[2048:]...)
	if _, st := Decode(torn); st != BlockTorn {
		t.Fatalf("torn block decoded as %v", st)
	}
	garbage := make([]byte, BlockSize)
	garbage[100] = 1
	if _, st := Decode(garbage); st != BlockTorn {
		t.Fatalf("garbage decoded as %v", st)
	}
}

func TestCheckWrites(t *testing.T) {
	// Block 1: gen 1 ok, gen 2 ok, gen 3 unknown. Block 2: gen 1 fail.
	ops := []Op{
		write("v", 1, 1, 0, 10, OK, "n1", 1),
		write("v", 1, 2, 20, 30, OK, "n1", 1),
		write("v", 1, 3, 40, 0, Unknown, "n1", 1),
		write("v", 2, 1, 0, 10, Fail, "n1", 1),
	}
	good := func(gen1, gen2 uint64) []Final {
		f := []Final{{Volume: "v", Block: 1, Data: stamp("v", 1, gen1)}, {Volume: "v", Block: 2, Data: make([]byte, BlockSize)}}
		if gen2 > 0 {
			f[1].Data = stamp("v", 2, gen2)
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		finals []Final
		want   string // "" = pass
	}{
		{"last acknowledged", good(2, 0), ""},
		{"later invoked, unknown outcome", good(3, 1), ""},
		{"older generation", good(1, 0), "older than acknowledged generation 2"},
		{"lost (zero)", []Final{{Volume: "v", Block: 1, Data: make([]byte, BlockSize)}, {Volume: "v", Block: 2, Data: make([]byte, BlockSize)}}, "acknowledged generation 2 lost"},
		{"torn", []Final{{Volume: "v", Block: 1, Data: append(append([]byte(nil), stamp("v", 1, 3)[:512]...), stamp("v", 1, 2)[512:]...)}, good(2, 0)[1]}, "torn"},
		{"never written", good(9, 0), "no client ever wrote"},
		{"misdirected", []Final{{Volume: "v", Block: 1, Data: stamp("v", 2, 2)}, good(2, 0)[1]}, "misdirected"},
		{"not read back", good(2, 0)[1:], "not read back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := CheckWrites(ops, tc.finals)
			if tc.want == "" {
				if len(rep.Anomalies) != 0 {
					t.Fatalf("anomalies: %v", rep.Anomalies)
				}
				if rep.AckedWrites != 2 || rep.BlocksWith != 1 {
					t.Fatalf("counts: %+v", rep)
				}
				return
			}
			wantAnomaly(t, rep.Anomalies, tc.want)
		})
	}
}

func TestCheckWritesReads(t *testing.T) {
	ops := []Op{
		write("v", 1, 1, 0, 10, OK, "n1", 1),
		write("v", 1, 2, 20, 30, OK, "n1", 1),
		read("v", 1, stamp("v", 1, 1), 25, 26, "n1"),      // concurrent with gen 2: 1 is fine
		read("v", 1, stamp("v", 1, 2), 31, 35, "n2"),      // fine
		read("v", 1, make([]byte, BlockSize), 5, 6, "n1"), // before any ack: fine
	}
	finals := []Final{{Volume: "v", Block: 1, Data: stamp("v", 1, 2)}}
	if rep := CheckWrites(ops, finals); len(rep.Anomalies) != 0 || rep.ReadsChecked != 3 {
		t.Fatalf("good reads: %+v", rep)
	}
	stale := append(ops, read("v", 1, stamp("v", 1, 1), 40, 41, "n2"))
	wantAnomaly(t, CheckWrites(stale, finals).Anomalies, "older than generation 2 acknowledged before the read")
	future := append(ops, read("v", 1, stamp("v", 1, 5), 40, 41, "n2"))
	wantAnomaly(t, CheckWrites(future, finals).Anomalies, "before any client wrote it")
	torn := append(ops, read("v", 1, append(append([]byte(nil), stamp("v", 1, 2)[:100]...), make([]byte, BlockSize-100)...), 40, 41, "n2"))
	wantAnomaly(t, CheckWrites(torn, finals).Anomalies, "torn")
}

func TestCheckSingleWriter(t *testing.T) {
	base := []Op{
		write("v", 1, 1, 0, 10, OK, "n1", 1),
		write("v", 2, 1, 50, 60, OK, "n2", 2), // after a promotion
		write("v", 1, 2, 5, 55, Unknown, "n1", 1),
	}
	if as := CheckSingleWriter(base, nil); len(as) != 0 {
		t.Fatalf("one writer at a time: %v", as)
	}
	// The deposed primary acknowledges a write invoked after the new
	// primary acknowledged one.
	two := append(base, write("v", 3, 1, 70, 80, OK, "n1", 1))
	wantAnomaly(t, CheckSingleWriter(two, nil), "n1 acknowledged write 0 (block 3) at epoch 1")
	// The nodes' records: sequential epochs pass, overlapping fail.
	recs := []AckRecord{{Node: "n1", Volume: "v", Epoch: 1, First: at(0), Last: at(40)}, {Node: "n2", Volume: "v", Epoch: 2, First: at(50), Last: at(90)}}
	if as := CheckSingleWriter(nil, recs); len(as) != 0 {
		t.Fatalf("sequential records: %v", as)
	}
	recs[0].Last = at(60)
	wantAnomaly(t, CheckSingleWriter(nil, recs), "acknowledged at epoch 1 until")
}

func TestCheckConvergence(t *testing.T) {
	ok := VolumeConvergence{Volume: "v", Converged: true, Replicas: []ReplicaObs{{Node: "n1", State: "UpToDate", Link: "in-sync", Sum: "aa"}, {Node: "n2", State: "UpToDate", Link: "in-sync", Sum: "aa"}}}
	if as := CheckConvergence([]VolumeConvergence{ok}); len(as) != 0 {
		t.Fatal(as)
	}
	differ := ok
	differ.Replicas = []ReplicaObs{ok.Replicas[0], {Node: "n2", State: "UpToDate", Link: "in-sync", Sum: "bb"}}
	wantAnomaly(t, CheckConvergence([]VolumeConvergence{differ}), "replica on n2 differs from the one on n1")
	stuck := ok
	stuck.Converged = false
	stuck.Replicas = []ReplicaObs{ok.Replicas[0], {Node: "n2", State: "Outdated", Link: "connecting"}}
	wantAnomaly(t, CheckConvergence([]VolumeConvergence{stuck}), "n2 Outdated/connecting")
	verify := ok
	verify.Verify, verify.Mismatches = "exit status 1", 2
	wantAnomaly(t, CheckConvergence([]VolumeConvergence{verify}), "2 mismatching ranges")
}

func TestCheckLiveness(t *testing.T) {
	if as := CheckLiveness([]Liveness{{Volume: "v"}}); len(as) != 0 {
		t.Fatal(as)
	}
	wantAnomaly(t, CheckLiveness([]Liveness{{Volume: "v", WriteErr: "timeout", Waited: time.Minute}}), "no write succeeded within 1m0s")
}

func TestCheckVMs(t *testing.T) {
	s := func(node string, id int, running bool, from, to int) DomainSample {
		return DomainSample{Node: node, Domain: "vm1", ID: id, Running: running, Before: at(from), After: at(to)}
	}
	// A migration: n1 runs it, then n2; one sample of n1 may still say
	// running while n2 starts (not proven simultaneous).
	migration := []DomainSample{
		s("n1", 1, true, 0, 5), s("n1", 1, true, 100, 105), s("n1", 1, true, 200, 205), s("n1", 1, false, 300, 305),
		s("n2", 4, false, 0, 5), s("n2", 4, false, 100, 105), s("n2", 4, true, 210, 215), s("n2", 4, true, 310, 315),
	}
	if as := CheckVMs(migration, []string{"vm1"}, map[string][]string{"vm1": {"n2"}}); len(as) != 0 {
		t.Fatal(as)
	}
	twice := append(migration, s("n2", 3, true, 150, 155))
	wantAnomaly(t, CheckVMs(twice, nil, nil), "VM vm1 ran on n1")
	spans := append(migration, s("n3", 9, true, 50, 55), s("n3", 9, true, 120, 125))
	wantAnomaly(t, CheckVMs(spans, nil, nil), "at once")
	wantAnomaly(t, CheckVMs(migration, []string{"vm1"}, map[string][]string{}), "runs on 0 nodes")
}

func TestParseAckRecords(t *testing.T) {
	log := `time=2026-12-06T11:42:35.144Z level=INFO msg="writes acknowledged" component=volumes volume=s1-b epoch=1 first_ns=1000 last_ns=1000 count=1
time=2026-12-06T11:42:35.200Z level=INFO msg="serving as primary" component=volumes volume=s1-b epoch=2
time=2026-12-06T11:42:36.146Z level=INFO msg="writes acknowledged" component=volumes volume=s1-b epoch=1 first_ns=1000 last_ns=5000 count=401
time=2026-12-06T11:42:36.146Z level=INFO msg="writes acknowledged" component=volumes volume=other epoch=1 first_ns=1 last_ns=9 count=4
time=2026-12-06T11:42:37.000Z level=INFO msg="writes acknowledged" component=volumes volume=s1-b epoch=3 first_ns=7000 last_ns=8000 count=2
`
	recs, err := parseAckRecords("n1", strings.NewReader(log), map[string]bool{"s1-b": true})
	if err != nil {
		t.Fatal(err)
	}
	want := []AckRecord{
		{Node: "n1", Volume: "s1-b", Epoch: 1, First: time.Unix(0, 1000), Last: time.Unix(0, 5000)},
		{Node: "n1", Volume: "s1-b", Epoch: 3, First: time.Unix(0, 7000), Last: time.Unix(0, 8000)},
	}
	if len(recs) != len(want) {
		t.Fatalf("records: %+v", recs)
	}
	for i := range want {
		if recs[i] != want[i] {
			t.Fatalf("record %d: %+v, want %+v", i, recs[i], want[i])
		}
	}
}

func TestSummaryMarkdown(t *testing.T) {
	var s Summary
	s.Add(&Result{Seed: 7, Injected: map[Kind]int{PowerOff: 2, Delay: 3}, Ops: 10, AckedWrites: 6, OperatorRefused: 1, DelayedPackets: 40, FollowerMoves: 5,
		Anomalies: []Anomaly{{Checker: "writes", Volume: "v", Detail: "block 1 lost"}}, Replay: "make chaos SEED=7 SCHEDULES=1", Schedule: "seed=7"})
	md := s.Markdown()
	for _, want := range []string{"| power-off | 2 |", "| delay | 3 |", "held by the delay faults (internal/netdelay) | 40 |", "| anomalies | 1 |", "make chaos SEED=7 SCHEDULES=1", "writes: volume v: block 1 lost", "refused under faults | 1 |", "moves to a new primary (single-writer checker) | 5 |"} {
		if !strings.Contains(md, want) {
			t.Fatalf("markdown lacks %q:\n%s", want, md)
		}
	}
}
