package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/guest"
)

// Window is what the heartbeat stream shows around one interval, typically
// one migration from the moment the command was started to the moment it
// returned.
//
// The outage is the longest gap between two consecutive arrivals of which
// at least part lies inside the interval: the last datagram before the
// interval and the first one after it count, so a gap that began just
// before the command or ended just after it is measured in full. This is
// the inter-arrival method of the Heartbeat/Xen thesis (Braastad 2006, §5.4),
// taken directly from the receiver's clock instead of from the loss count.
type Window struct {
	// Received counts the arrivals inside [from, to].
	Received int `json:"received"`
	// Lost counts the sequence numbers missing between consecutive
	// arrivals of the window's gaps (datagrams the guest sent that never
	// arrived). A guest that is paused sends nothing, so this is not the
	// outage times the rate: see the report's method notes.
	Lost uint64 `json:"lost"`
	// Longest is the longest gap and LongestStart its first datagram's
	// arrival.
	Longest      time.Duration `json:"-"`
	LongestStart time.Time     `json:"-"`
	// LongestLost is the number of datagrams missing inside that gap.
	LongestLost uint64 `json:"longest_lost"`
	// GuestClock is how much the guest's CLOCK_MONOTONIC advanced across
	// the longest gap (the difference of the two datagrams' Mono).
	GuestClock time.Duration `json:"-"`
	// AckStall is the longest time the acknowledged disk counter was seen
	// not to advance, from the first datagram carrying a value to the first
	// carrying a larger one, over the window's arrivals. Its resolution is
	// the send interval.
	AckStall time.Duration `json:"-"`
	// Boot and sequence continuity: Rebooted is true when Boot changed or
	// Seq went backwards between two arrivals of the window.
	Rebooted bool `json:"rebooted"`
	// AckedBefore is the counter in the last datagram before the window,
	// AckedAfter in the first after it; SeqBefore and SeqAfter likewise.
	AckedBefore uint64 `json:"acked_before"`
	AckedAfter  uint64 `json:"acked_after"`
	SeqBefore   uint64 `json:"seq_before"`
	SeqAfter    uint64 `json:"seq_after"`
	// Around is the stream next to the longest gap: a few datagrams before
	// it and more after it, timed relative to the datagram that opens the
	// gap, by the receiver's clock and by the guest's.
	Around []GapPoint `json:"around_longest_gap,omitempty"`
}

// GapPoint is one datagram near the longest gap.
type GapPoint struct {
	Seq     uint64  `json:"seq"`
	Acked   uint64  `json:"acked"`
	AtMs    float64 `json:"at_ms"`
	GuestMs float64 `json:"guest_ms"`
}

// Datagrams listed in Window.Around before and after the longest gap.
const (
	aroundBefore = 3
	aroundAfter  = 8
)

// errStreamOpen is returned when no datagram arrived after the window yet.
var errStreamOpen = errors.New("no datagram after the window yet: the stream has not resumed")

// analyzeWindow measures the stream arrivals (in arrival order) over
// [from, to]. It needs one arrival at or before from (else the window starts
// at the first arrival) and one at or after to.
func analyzeWindow(arrivals []guest.Arrival, from, to time.Time) (Window, error) {
	var w Window
	if to.Before(from) {
		return w, fmt.Errorf("window ends (%s) before it starts (%s)", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))
	}
	// first: the last arrival at or before from, or 0.
	first := sort.Search(len(arrivals), func(i int) bool { return arrivals[i].At.After(from) }) - 1
	if first < 0 {
		first = 0
	}
	// last: the first arrival at or after to.
	last := sort.Search(len(arrivals), func(i int) bool { return !arrivals[i].At.Before(to) })
	if last >= len(arrivals) {
		return w, errStreamOpen
	}
	if last <= first {
		return w, errors.New("no arrivals around the window")
	}
	span := arrivals[first : last+1]
	w.AckedBefore, w.SeqBefore = span[0].Acked, span[0].Seq
	w.AckedAfter, w.SeqAfter = span[len(span)-1].Acked, span[len(span)-1].Seq
	ackSince := span[0].At
	longest := -1 // index in span of the datagram opening the longest gap
	for i, a := range span {
		if !a.At.Before(from) && !a.At.After(to) {
			w.Received++
		}
		if i == 0 {
			continue
		}
		prev := span[i-1]
		if a.Boot != prev.Boot || a.Seq < prev.Seq {
			w.Rebooted = true
		}
		var lost uint64
		if a.Boot == prev.Boot && a.Seq > prev.Seq+1 {
			lost = a.Seq - prev.Seq - 1
		}
		w.Lost += lost
		if gap := a.At.Sub(prev.At); gap > w.Longest {
			w.Longest, w.LongestStart, w.LongestLost = gap, prev.At, lost
			longest = i - 1
			w.GuestClock = a.Mono - prev.Mono
		}
		if a.Acked != prev.Acked || a.Boot != prev.Boot {
			if stall := a.At.Sub(ackSince); stall > w.AckStall {
				w.AckStall = stall
			}
			ackSince = a.At
		}
	}
	if stall := span[len(span)-1].At.Sub(ackSince); stall > w.AckStall {
		w.AckStall = stall
	}
	if longest >= 0 {
		// Indices into arrivals, which extend beyond the span.
		at := first + longest
		o := arrivals[at]
		for _, a := range arrivals[max(at-aroundBefore, 0):min(at+2+aroundAfter, len(arrivals))] {
			w.Around = append(w.Around, GapPoint{Seq: a.Seq, Acked: a.Acked, AtMs: benchkit.MS(a.At.Sub(o.At)), GuestMs: benchkit.MS(a.Mono - o.Mono)})
		}
	}
	return w, nil
}

// Continuity checks a whole run's stream: one boot, sequence numbers and
// acknowledged counters that never go back.
type Continuity struct {
	Datagrams  int      `json:"datagrams"`
	Boots      []uint64 `json:"boots"`
	SeqFirst   uint64   `json:"seq_first"`
	SeqLast    uint64   `json:"seq_last"`
	AckedFirst uint64   `json:"acked_first"`
	AckedLast  uint64   `json:"acked_last"`
	// SeqBackwards and AckedBackwards count arrivals whose value is lower
	// than the previous arrival's (in the same boot).
	SeqBackwards   int `json:"seq_backwards"`
	AckedBackwards int `json:"acked_backwards"`
	// GuestRate is the send rate the guest achieved by its own clock:
	// datagrams sent (Seq advance) per second of guest CLOCK_MONOTONIC;
	// ReceiveRate is arrivals per second of receiver time. Both cover the
	// agent's first run only (until a restart, if any).
	GuestRate   float64 `json:"guest_rate_per_s"`
	ReceiveRate float64 `json:"receive_rate_per_s"`
}

// OK is true when the guest never restarted and nothing went backwards.
func (c Continuity) OK() bool {
	return len(c.Boots) == 1 && c.SeqBackwards == 0 && c.AckedBackwards == 0
}

func continuity(arrivals []guest.Arrival) Continuity {
	var c Continuity
	c.Datagrams = len(arrivals)
	if len(arrivals) == 0 {
		return c
	}
	f, l := arrivals[0], arrivals[len(arrivals)-1]
	c.SeqFirst, c.SeqLast, c.AckedFirst, c.AckedLast = f.Seq, l.Seq, f.Acked, l.Acked
	firstRun := len(arrivals) // arrivals of the agent's first run
	for i, a := range arrivals {
		if !slices.Contains(c.Boots, a.Boot) {
			c.Boots = append(c.Boots, a.Boot)
		}
		if i == 0 {
			continue
		}
		p := arrivals[i-1]
		if a.Boot != p.Boot || a.Seq < p.Seq {
			firstRun = min(firstRun, i)
		}
		if a.Boot != p.Boot {
			continue
		}
		if a.Seq < p.Seq {
			c.SeqBackwards++
		}
		if a.Acked < p.Acked {
			c.AckedBackwards++
		}
	}
	l = arrivals[firstRun-1]
	if l.Mono > f.Mono && l.Seq > f.Seq {
		c.GuestRate = float64(l.Seq-f.Seq) / (l.Mono - f.Mono).Seconds()
	}
	if d := l.At.Sub(f.At); d > 0 {
		c.ReceiveRate = float64(firstRun-1) / d.Seconds()
	}
	return c
}

// Dist summarises a sample: p50 and p95 interpolate linearly between the
// closest ranks (numpy's default), so with 20 samples p95 lies between the
// 19th and the 20th value.
type Dist struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
	// Std is the sample standard deviation (n-1), as the thesis's ±.
	Std float64 `json:"std"`
}

func distOf(xs []float64) Dist {
	d := Dist{N: len(xs)}
	if len(xs) == 0 {
		return d
	}
	smp := benchkit.SortSample(xs)
	s := smp.Sorted
	d.Min, d.Max, d.Mean = smp.Min, smp.Max, smp.Mean
	d.P50, d.P95 = benchkit.Interpolated(s, 0.50), benchkit.Interpolated(s, 0.95)
	if len(s) > 1 {
		var ss float64
		for _, x := range s {
			ss += (x - d.Mean) * (x - d.Mean)
		}
		d.Std = math.Sqrt(ss / float64(len(s)-1))
	}
	return d
}
