package refusal

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxSources bounds the addresses a Limiter tracks.
//
// golang.org/x/time/rate is not a dependency of the module, and a limiter
// keyed by address needs a bounded map around it anyway; this is that map
// with the bucket arithmetic inline. When the map is full, idle addresses
// (a full bucket is the same as a new one) are forgotten first; if every
// tracked address is busy, new ones share one overflow bucket, so a flood
// from many addresses is still limited as a whole and memory stays bounded.
const MaxSources = 4096

// Limiter is a token bucket per source address: Burst attempts at once,
// then one every Every. The zero value is not usable; use NewLimiter.
// It is safe for concurrent use.
type Limiter struct {
	every time.Duration
	burst float64

	mu       sync.Mutex
	buckets  map[string]*bucket
	overflow bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter allows burst attempts per source at once and one more every
// every after that.
func NewLimiter(burst int, every time.Duration) *Limiter {
	return &Limiter{every: every, burst: float64(burst), buckets: map[string]*bucket{}}
}

// Allow takes one token from src's bucket at now; false means the attempt
// is refused.
func (l *Limiter) Allow(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= MaxSources {
			l.forgetIdle(now)
		}
		if len(l.buckets) >= MaxSources {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, at: now}
			l.buckets[src] = b
		}
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *Limiter) refill(b *bucket, now time.Time) {
	if b.at.IsZero() {
		b.tokens, b.at = l.burst, now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.every))
		b.at = now
	}
}

// forgetIdle drops the sources whose bucket has refilled.
func (l *Limiter) forgetIdle(now time.Time) {
	for src, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, src)
		}
	}
}

// Sources is the number of addresses tracked (for tests).
func (l *Limiter) Sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// SourceOf is the key of a remote address: its IP (the port changes with
// every connection), and for IPv6 its /64, which one host usually holds
// whole. An address that does not parse is its own key.
func SourceOf(addr net.Addr) string {
	if addr == nil {
		return "unknown"
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
