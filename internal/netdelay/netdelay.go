package netdelay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
)

// Config sets up a Delayer.
type Config struct {
	// NetNS is the path of the network namespace to bind the queue in
	// (/var/run/netns/NAME or /proc/PID/ns/net); empty: the caller's.
	NetNS string
	// Queue is the NFQUEUE queue number the rules send packets to.
	Queue uint16
	// Delay is how long every packet is held.
	Delay time.Duration
	// MaxQueue is how many packets the kernel keeps queued for this
	// Delayer before it drops new ones (default 65536).
	MaxQueue uint32
}

// Delayer holds the packets of one queue for a fixed delay.
type Delayer struct {
	cfg    Config
	nf     *nfqueue.Nfqueue
	cancel context.CancelFunc
	held   chan held
	done   chan struct{}
	flush  chan struct{}

	closeOnce sync.Once
	closeErr  error

	queued, released, failed atomic.Uint64
}

type held struct {
	id uint32
	at time.Time
}

// Start binds a Delayer to cfg.Queue in cfg.NetNS and starts releasing
// packets. The caller must Close it.
func Start(cfg Config) (*Delayer, error) {
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("netdelay: negative delay %s", cfg.Delay)
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = 65536
	}
	nc := &nfqueue.Config{
		NfQueue:     cfg.Queue,
		MaxQueueLen: cfg.MaxQueue,
		// Only the packet's ID and metadata come up: the payload is not
		// looked at. GSO: large segments are queued whole, not split.
		Copymode:     nfqueue.NfQnlCopyMeta,
		Flags:        nfqueue.NfQaCfgFlagGSO,
		WriteTimeout: 5 * time.Second,
	}
	if cfg.NetNS != "" {
		f, err := os.Open(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("netdelay: %w", err)
		}
		// The netlink socket is created in the namespace and stays there.
		defer f.Close()
		nc.NetNS = int(f.Fd())
	}
	nf, err := nfqueue.Open(nc)
	if err != nil {
		return nil, fmt.Errorf("netdelay: open queue %d: %w", cfg.Queue, err)
	}
	// A burst larger than the socket's buffer must not end the reader.
	_ = nf.SetOption(netlink.NoENOBUFS, true)
	d := &Delayer{cfg: cfg, nf: nf, held: make(chan held, cfg.MaxQueue), done: make(chan struct{}), flush: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		h := held{id: *a.PacketID, at: time.Now()}
		select {
		case d.held <- h:
			d.queued.Add(1)
		default:
			// Cannot happen while the kernel's queue is no longer than
			// ours; if it does, let the packet go late rather than never.
			d.failed.Add(1)
			_ = nf.SetVerdict(h.id, nfqueue.NfAccept)
		}
		return 0
	}
	onErr := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		var oe *netlink.OpError
		if errors.As(err, &oe) && (oe.Timeout() || oe.Temporary()) {
			return 0
		}
		// Keep reading: a lost message only leaves a packet to the
		// kernel's queue, which Close's unbind drops.
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		cancel()
		nf.Close()
		return nil, fmt.Errorf("netdelay: bind queue %d: %w", cfg.Queue, err)
	}
	go d.release()
	return d, nil
}

// release accepts the held packets in order, each once its delay is over
// (at once after Close began).
func (d *Delayer) release() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	flushing := false
	for {
		var h held
		select {
		case h = <-d.held:
		case <-d.flush:
			flushing = true
			select {
			case h = <-d.held:
			default:
				return
			}
		}
		if !flushing {
			if wait := time.Until(h.at.Add(d.cfg.Delay)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-d.flush:
					flushing = true
				}
			}
		}
		if err := d.nf.SetVerdict(h.id, nfqueue.NfAccept); err != nil {
			d.failed.Add(1)
		} else {
			d.released.Add(1)
		}
		if flushing {
			// Drain what is left without waiting, in order.
			for {
				select {
				case h = <-d.held:
					if err := d.nf.SetVerdict(h.id, nfqueue.NfAccept); err != nil {
						d.failed.Add(1)
					} else {
						d.released.Add(1)
					}
					continue
				default:
				}
				return
			}
		}
	}
}

// Stats reports the packets received, accepted after their delay (or at
// Close), and those whose verdict failed or that went without delay.
func (d *Delayer) Stats() (queued, released, failed uint64) {
	return d.queued.Load(), d.released.Load(), d.failed.Load()
}

// Delay is the delay this Delayer holds packets for.
func (d *Delayer) Delay() time.Duration { return d.cfg.Delay }

// Close accepts every packet still held, in order, stops reading and
// unbinds the queue. Delete the rules before: packets queued after the
// unbind are dropped by the kernel.
func (d *Delayer) Close() error {
	d.closeOnce.Do(func() {
		close(d.flush)
		<-d.done
		d.cancel()
		d.closeErr = d.nf.Close()
	})
	return d.closeErr
}

// Rules are the iptables commands (argv, to run inside the namespace) that
// send the namespace's packets to and from peers through queue q: "-I"
// inserts them at the top of OUTPUT and INPUT, "-D" deletes them.
func Rules(op string, peers []string, q uint16) [][]string {
	set := strings.Join(peers, ",")
	num := strconv.Itoa(int(q))
	return [][]string{
		{"iptables", "-w", op, "OUTPUT", "-d", set, "-j", "NFQUEUE", "--queue-num", num},
		{"iptables", "-w", op, "INPUT", "-s", set, "-j", "NFQUEUE", "--queue-num", num},
	}
}
