package netdelay

import (
	"context"
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
	cfg     Config
	nf      *nfqueue.Nfqueue // nil in the tests of the release order
	accept  func(id uint32) error
	cancel  context.CancelFunc
	held    chan held
	done    chan struct{}
	pass    chan struct{} // closed by Release
	closing chan struct{} // closed by Close
	passing atomic.Bool   // Release was called

	releaseOnce, closeOnce sync.Once
	closeErr               error

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
	d := newDelayer(cfg, func(id uint32) error { return nf.SetVerdict(id, nfqueue.NfAccept) })
	d.nf = nf
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID != nil {
			d.enqueue(*a.PacketID)
		}
		return 0
	}
	onErr := func(error) int {
		if ctx.Err() != nil {
			return 1
		}
		// Keep reading (timeouts, a full socket buffer): a message lost
		// leaves its packet in the kernel's queue, which the unbind at
		// Close drops.
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		cancel()
		nf.Close()
		return nil, fmt.Errorf("netdelay: bind queue %d: %w", cfg.Queue, err)
	}
	return d, nil
}

// newDelayer is a Delayer whose verdicts go to accept, not yet reading
// from a queue (Start binds it; the tests feed it with enqueue).
func newDelayer(cfg Config, accept func(id uint32) error) *Delayer {
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = 65536
	}
	d := &Delayer{cfg: cfg, accept: accept, held: make(chan held, cfg.MaxQueue), done: make(chan struct{}),
		pass: make(chan struct{}), closing: make(chan struct{})}
	go d.release()
	return d
}

// enqueue holds packet id from now on.
func (d *Delayer) enqueue(id uint32) {
	h := held{id: id, at: time.Now()}
	select {
	case d.held <- h:
		d.queued.Add(1)
	default:
		// Cannot happen while the kernel's queue is no longer than ours
		// (MaxQueue both): every packet held is one the kernel still
		// counts. Were it to, the packet goes undelayed, not never.
		d.failed.Add(1)
		_ = d.accept(id)
	}
}

// release accepts the held packets in order, each once its delay is over,
// or at once after Release; after Close began it accepts what is left and
// returns.
func (d *Delayer) release() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	accept := func(h held) {
		if err := d.accept(h.id); err != nil {
			d.failed.Add(1)
		} else {
			d.released.Add(1)
		}
	}
	for {
		var h held
		select {
		case h = <-d.held:
		case <-d.closing:
			for {
				select {
				case h = <-d.held:
					accept(h)
				default:
					return
				}
			}
		}
		if wait := time.Until(h.at.Add(d.cfg.Delay)); wait > 0 && !d.passing.Load() {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.pass:
				if !timer.Stop() {
					<-timer.C
				}
			}
		}
		accept(h)
	}
}

// Release ends the delay without a gap in the order: what is held and
// what comes from now on is accepted at once, still one by one in order.
// Call it before deleting the rules, so that no packet that bypasses the
// queue overtakes one still held; then Close.
func (d *Delayer) Release() {
	d.releaseOnce.Do(func() {
		d.passing.Store(true)
		close(d.pass)
	})
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
		d.Release()
		close(d.closing)
		<-d.done
		if d.nf != nil {
			d.cancel()
			d.closeErr = d.nf.Close()
		}
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
