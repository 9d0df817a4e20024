package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Arrival is a datagram and when the Receiver read it.
type Arrival struct {
	Datagram
	At time.Time
}

// Outage is one interruption of the guest's heartbeat stream.
type Outage struct {
	// Start is the arrival of the last datagram before the gap, End that of
	// the first after it, and Gap = End - Start: the downtime as the Remus
	// (Xen) heartbeat measurements define it, an upper bound of the guest's
	// real outage by at most one send interval.
	Start, End time.Time
	Gap        time.Duration
	// LostSeqs counts the sequence numbers missing between the two
	// datagrams. Across a reboot only those missing at the start of the new
	// boot are known: End's Seq - 1.
	LostSeqs uint64
	// Rebooted is true when the guest's agent started again during the gap:
	// Boot changed, or Seq went backwards (a guest without a disk keeps
	// Boot 0).
	Rebooted bool
}

// Receiver records the heartbeat datagrams arriving on a UDP socket.
type Receiver struct {
	conn *net.UDPConn
	log  *slog.Logger

	mu        sync.Mutex
	arrivals  []Arrival
	malformed uint64
	// changed is closed and replaced on every arrival, waking WaitFor.
	changed chan struct{}
}

// NewReceiver returns a Receiver for conn, which the caller opened (in
// whatever network namespace the guest reaches) and keeps owning. Call Run.
func NewReceiver(conn *net.UDPConn, log *slog.Logger) *Receiver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{conn: conn, log: log, changed: make(chan struct{})}
}

// Run reads datagrams until ctx is done (it returns nil then) or reading
// fails. It does not close the conn.
func (r *Receiver) Run(ctx context.Context) error {
	// Unblock the read when ctx ends; a past deadline does it without
	// closing the caller's conn (and a previous Run's one is cleared here).
	if err := r.conn.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = r.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		at := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("receiver: conn closed: %w", err)
			}
			return fmt.Errorf("receiver: read: %w", err)
		}
		d, err := DecodeDatagram(buf[:n])
		r.mu.Lock()
		if err != nil {
			r.malformed++
			r.mu.Unlock()
			r.log.Debug("dropping malformed datagram", "from", from, "err", err)
			continue
		}
		r.arrivals = append(r.arrivals, Arrival{Datagram: d, At: at})
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
}

// Start runs r in a goroutine; stop ends it and waits for it, returning
// Run's error.
func (r *Receiver) Start(ctx context.Context) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return sync.OnceValue(func() error {
		cancel()
		return <-done
	})
}

// Last returns the most recent datagram and its arrival time; ok is false
// when none has arrived.
func (r *Receiver) Last() (d Datagram, at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.arrivals) == 0 {
		return Datagram{}, time.Time{}, false
	}
	a := r.arrivals[len(r.arrivals)-1]
	return a.Datagram, a.At, true
}

// Arrivals returns a copy of everything received, in arrival order.
func (r *Receiver) Arrivals() []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Arrival(nil), r.arrivals...)
}

// Malformed counts the datagrams that failed to decode.
func (r *Receiver) Malformed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.malformed
}

// WaitFor returns the first datagram, in arrival order and starting with
// those already received, for which match is true; it waits for more until
// ctx is done. To wait for something new, match on content (a Seq or Acked
// beyond one already seen).
func (r *Receiver) WaitFor(ctx context.Context, match func(Datagram) bool) (Datagram, error) {
	next := 0
	for {
		r.mu.Lock()
		pending := r.arrivals[next:]
		next = len(r.arrivals)
		changed := r.changed
		r.mu.Unlock()
		for _, a := range pending {
			if match(a.Datagram) {
				return a.Datagram, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Datagram{}, fmt.Errorf("waiting for a matching datagram (%d received): %w", next, context.Cause(ctx))
		}
	}
}

// Outages returns, oldest first, every interruption of at least minGap
// between two consecutive arrivals. A stream still interrupted now (no
// datagram after the gap yet) is not included; compare Last's time with
// the clock for that.
func (r *Receiver) Outages(minGap time.Duration) []Outage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return outages(r.arrivals, minGap)
}

func outages(arrivals []Arrival, minGap time.Duration) []Outage {
	var out []Outage
	for i := 1; i < len(arrivals); i++ {
		prev, cur := arrivals[i-1], arrivals[i]
		gap := cur.At.Sub(prev.At)
		if gap < minGap {
			continue
		}
		o := Outage{Start: prev.At, End: cur.At, Gap: gap, Rebooted: cur.Boot != prev.Boot || cur.Seq < prev.Seq}
		switch {
		case o.Rebooted:
			if cur.Seq > 0 {
				o.LostSeqs = cur.Seq - 1
			}
		case cur.Seq > prev.Seq:
			o.LostSeqs = cur.Seq - prev.Seq - 1
		}
		out = append(out, o)
	}
	return out
}

// LongestOutage returns the longest interruption, or ok false when fewer
// than two datagrams arrived.
func (r *Receiver) LongestOutage() (o Outage, ok bool) {
	for _, x := range r.Outages(0) {
		if !ok || x.Gap > o.Gap {
			o, ok = x, true
		}
	}
	return o, ok
}
