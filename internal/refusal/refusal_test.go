package refusal

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLimiterBurstThenRate(t *testing.T) {
	l := NewLimiter(3, time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if !l.Allow("a", t0) {
			t.Fatalf("attempt %d of the burst refused", i)
		}
	}
	if l.Allow("a", t0) {
		t.Fatal("fourth attempt at once allowed")
	}
	if !l.Allow("b", t0) {
		t.Fatal("another source is limited by the first")
	}
	if l.Allow("a", t0.Add(900*time.Millisecond)) {
		t.Fatal("allowed before a token refilled")
	}
	if !l.Allow("a", t0.Add(1100*time.Millisecond)) {
		t.Fatal("refused after a token refilled")
	}
	// A long pause refills the burst, never more.
	for i := range 3 {
		if !l.Allow("a", t0.Add(time.Hour)) {
			t.Fatalf("attempt %d after a pause refused", i)
		}
	}
	if l.Allow("a", t0.Add(time.Hour)) {
		t.Fatal("bucket grew past the burst")
	}
}

func TestLimiterBounded(t *testing.T) {
	l := NewLimiter(1, time.Minute)
	t0 := time.Unix(1000, 0)
	for i := range MaxSources {
		l.Allow(fmt.Sprint("busy", i), t0) // each bucket now empty
	}
	// Every tracked source is busy: newcomers share one bucket.
	if !l.Allow("new1", t0) || l.Allow("new2", t0) {
		t.Fatal("the overflow bucket is not shared")
	}
	if n := l.Sources(); n != MaxSources {
		t.Fatalf("%d sources tracked, want %d", n, MaxSources)
	}
	// Once the old buckets refilled they are forgotten to make room.
	if !l.Allow("new3", t0.Add(2*time.Minute)) {
		t.Fatal("refused after the busy sources went idle")
	}
	if n := l.Sources(); n != 1 {
		t.Fatalf("%d sources tracked after the idle ones were forgotten, want 1", n)
	}
}

func TestSourceOf(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.4"), Port: 4242}, "10.0.0.4"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.4"), Port: 1}, "10.0.0.4"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{nil, "unknown"},
	} {
		if got := SourceOf(c.addr); got != c.want {
			t.Errorf("SourceOf(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
}

func TestLogAggregates(t *testing.T) {
	var buf bytes.Buffer
	l := NewLog(slog.New(slog.NewTextHandler(&buf, nil)), "join refused", time.Hour)
	t0 := time.Now()
	l.Refused("10.0.0.9", "bad_token", "join token is not valid", t0)
	if n := strings.Count(buf.String(), "join refused"); n != 1 {
		t.Fatalf("first refusal: %d lines, want 1 at once:\n%s", n, buf.String())
	}
	for i := range 1000 {
		reason := "bad_token"
		if i%10 == 0 {
			reason = "rate_limited"
		}
		l.Refused("10.0.0.9", reason, "x", t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := strings.Count(buf.String(), "join refused"); n != 1 {
		t.Fatalf("a burst wrote %d lines, want none before the interval ends:\n%s", n-1, buf.String())
	}
	l.Flush()
	out := buf.String()
	if n := strings.Count(out, "join refused"); n != 2 || !strings.Contains(out, "count=1000") ||
		!strings.Contains(out, `reasons="bad_token=900 rate_limited=100"`) || !strings.Contains(out, `sources="10.0.0.9=1000"`) {
		t.Fatalf("summary:\n%s", out)
	}
}
