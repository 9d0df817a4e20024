package vmbench

import (
	"strings"
	"testing"
	"time"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestDecodeEvents(t *testing.T) {
	// What `tandem events --output json` prints: indented objects, one
	// after the other, with proto field names.
	out := `{
  "seq": "12",
  "at": "2026-11-22T02:47:34.774Z",
  "by": "n2",
  "kind": "node-dead",
  "node": "n1",
  "vm": "",
  "detail": "suspect -> dead; last answer {3s} ago"
}
{
  "seq": "13",
  "at": "2026-11-22T02:47:35.001Z",
  "by": "n2",
  "kind": "fence-result",
  "node": "n1",
  "vm": "",
  "detail": "confirmed by ipmi: \"off\"",
  "future_field": 1
}
`
	evs, err := DecodeEvents([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].GetSeq() != 12 || evs[1].GetKind() != "fence-result" || evs[1].GetDetail() != `confirmed by ipmi: "off"` {
		t.Fatalf("events %v", evs)
	}
	if !evs[0].GetAt().AsTime().Equal(time.Date(2026, 11, 22, 2, 47, 34, 774e6, time.UTC)) {
		t.Fatalf("at %v", evs[0].GetAt().AsTime())
	}
	if evs, err := DecodeEvents(nil); err != nil || len(evs) != 0 {
		t.Fatalf("empty: %v %v", evs, err)
	}
	if _, err := DecodeEvents([]byte(`{"seq": "1"} {"seq":`)); err == nil {
		t.Fatal("truncated output accepted")
	}
}

func TestLogWindow(t *testing.T) {
	log := `time=2026-11-22T02:47:30.000Z level=INFO msg=a
time=2026-11-22T02:47:31.000Z level=WARN msg=b
  continuation of b
time=2026-11-22T02:47:32.000Z level=INFO msg=c
time=2026-11-22T02:47:40.000Z level=INFO msg=d
`
	from := time.Date(2026, 11, 22, 2, 47, 31, 0, time.UTC)
	to := time.Date(2026, 11, 22, 2, 47, 35, 0, time.UTC)
	got := logWindow(log, from, to, 10)
	if got != "time=2026-11-22T02:47:31.000Z level=WARN msg=b\n  continuation of b\ntime=2026-11-22T02:47:32.000Z level=INFO msg=c" {
		t.Fatalf("window:\n%s", got)
	}
	got = logWindow(log, from, to, 1)
	if !strings.HasPrefix(got, "(2 earlier lines") || !strings.HasSuffix(got, "msg=c") {
		t.Fatalf("capped window:\n%s", got)
	}
	if got := logWindow(log, to.Add(time.Hour), to.Add(2*time.Hour), 5); !strings.Contains(got, "no lines") {
		t.Fatalf("empty window: %q", got)
	}
}

func TestReplicas(t *testing.T) {
	up := tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	v := &tandemv1.VolumeInfo{Replicas: []*tandemv1.VolumeReplica{
		{Node: "n1", State: up, Primary: true},
		{Node: "n2", State: up, Link: "in-sync"},
		{Node: "n3", State: tandemv1.ReplicaState_REPLICA_STATE_OUTDATED},
	}}
	if AllUpToDate(v, 3) {
		t.Fatal("an Outdated replica passed")
	}
	if s := ReplicaSummary(v); s != "n1:UP_TO_DATE* n2:UP_TO_DATE/in-sync n3:OUTDATED" {
		t.Fatalf("summary %q", s)
	}
	v.Replicas[2].State = up
	if !AllUpToDate(v, 3) || AllUpToDate(v, 2) {
		t.Fatal("AllUpToDate")
	}
}

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]uint64{"192M": 192, "1G": 1024, " 2g ": 2048, "64": 64} {
		if n, err := ParseMiB(in); err != nil || n != want {
			t.Errorf("ParseMiB(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "0", "1.5G", "1T", "-1M"} {
		if n, err := ParseMiB(in); err == nil {
			t.Errorf("ParseMiB(%q) = %d, want an error", in, n)
		}
	}
}
