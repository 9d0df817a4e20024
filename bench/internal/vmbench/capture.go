package vmbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	"github.com/tandemhci/tandem/netannounce"
)

// Stamped is a guest datagram and the kernel's receive time of its frame.
type Stamped struct {
	guest.Datagram
	At     time.Time
	Kernel bool // At is the kernel's timestamp (else the read time)
}

// Announced is an address announcement for the guest's IP seen on the wire.
type Announced struct {
	At   time.Time
	Kind string
	MAC  string
}

// Wire records, from a packet capture on the switch's VM bridge, the
// guest's heartbeat datagrams and the announcements of its address: the
// tcpdump of the thesis's method.
type Wire struct {
	capt *netannounce.Capturer
	port uint16
	ip   netip.Addr
	pcap *pcapgo.Writer
	file *os.File
	done chan struct{}

	mu        sync.Mutex
	dgrams    []Stamped
	anns      []Announced
	malformed int
	noKernel  int
	changed   chan struct{}
}

// StartWire captures on br1 in the switch namespace until Close. With a
// pcapPath the matching frames are also written there (pcap, for
// Wireshark or tcpdump -r).
func StartWire(ctx context.Context, c *testcluster.Cluster, port uint16, ip netip.Addr, pcapPath string, log *slog.Logger) (*Wire, error) {
	w := &Wire{port: port, ip: ip, done: make(chan struct{}), changed: make(chan struct{})}
	if pcapPath != "" {
		f, err := os.Create(pcapPath)
		if err != nil {
			return nil, fmt.Errorf("pcap file: %w", err)
		}
		w.file, w.pcap = f, pcapgo.NewWriter(f)
		if err := w.pcap.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
			f.Close()
			return nil, fmt.Errorf("pcap header: %w", err)
		}
	}
	err := c.InNetns(c.Switch(), func() error {
		var err error
		w.capt, err = netannounce.Capture(ctx, "br1", netannounce.CaptureOptions{
			SkipOutgoing: true,
			Queue:        8192,
			Logger:       log,
			Filter:       func(p gopacket.Packet) bool { return relevant(p, port) },
		})
		return err
	})
	if err != nil {
		if w.file != nil {
			w.file.Close()
		}
		return nil, err
	}
	go w.run()
	return w, nil
}

// relevant is the capture filter: UDP to the receiver's port, or ARP.
func relevant(p gopacket.Packet, port uint16) bool {
	if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		return uint16(udp.DstPort) == port
	}
	return p.Layer(layers.LayerTypeARP) != nil
}

// Frame kinds classify returns.
const (
	frameOther = iota
	frameDatagram
	frameAnnouncement
	frameMalformed
)

// classify decodes one captured frame: a guest datagram to port, an
// announcement of ip, a malformed datagram to port, or something else.
func classify(p gopacket.Packet, port uint16, ip netip.Addr) (int, guest.Datagram, netannounce.Announcement) {
	if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		if uint16(udp.DstPort) != port {
			return frameOther, guest.Datagram{}, netannounce.Announcement{}
		}
		d, err := guest.DecodeDatagram(udp.Payload)
		if err != nil {
			return frameMalformed, guest.Datagram{}, netannounce.Announcement{}
		}
		return frameDatagram, d, netannounce.Announcement{}
	}
	a, err := netannounce.AnnouncementFromPacket(p)
	if err == nil && a.Addr == ip {
		return frameAnnouncement, guest.Datagram{}, a
	}
	return frameOther, guest.Datagram{}, netannounce.Announcement{}
}

func (w *Wire) run() {
	defer close(w.done)
	for cp := range w.capt.Packets() {
		kind, d, a := classify(cp.Packet, w.port, w.ip)
		if kind == frameOther {
			continue
		}
		if w.pcap != nil {
			_ = w.pcap.WritePacket(gopacket.CaptureInfo{Timestamp: cp.Timestamp, CaptureLength: len(cp.Data), Length: cp.Length}, cp.Data)
		}
		w.mu.Lock()
		if !cp.KernelTimestamp {
			w.noKernel++
		}
		switch kind {
		case frameDatagram:
			w.dgrams = append(w.dgrams, Stamped{Datagram: d, At: cp.Timestamp, Kernel: cp.KernelTimestamp})
		case frameAnnouncement:
			w.anns = append(w.anns, Announced{At: cp.Timestamp, Kind: a.Kind.String(), MAC: a.MAC.String()})
		case frameMalformed:
			w.malformed++
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// Close stops the capture and returns the kernel's drop count.
func (w *Wire) Close() (dropped uint64, err error) {
	_ = w.capt.Close()
	<-w.done
	if w.file != nil {
		err = w.file.Close()
	}
	return w.capt.Stats().Dropped, errors.Join(err, w.capt.Err())
}

// Datagrams returns a copy of every datagram captured, in capture order.
func (w *Wire) Datagrams() []Stamped {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Stamped(nil), w.dgrams...)
}

// Announcements returns a copy of every announcement captured.
func (w *Wire) Announcements() []Announced {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Announced(nil), w.anns...)
}

// Counts is how many malformed datagrams were captured, and how many
// frames had no kernel timestamp.
func (w *Wire) Counts() (malformed, noKernel int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.malformed, w.noKernel
}

// WaitFor returns the first captured datagram, oldest first, that match
// accepts, waiting for more until ctx ends.
func (w *Wire) WaitFor(ctx context.Context, match func(Stamped) bool) (Stamped, error) {
	next := 0
	for {
		w.mu.Lock()
		pending := w.dgrams[next:]
		next = len(w.dgrams)
		changed := w.changed
		w.mu.Unlock()
		for _, d := range pending {
			if match(d) {
				return d, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Stamped{}, fmt.Errorf("waiting for a datagram (%d captured): %w", next, context.Cause(ctx))
		}
	}
}

// StreamAround summarises the captured stream around a crash at t0 whose
// kill completed at killed: the newest datagram of boot sent before the
// crash, the first datagram of a later boot, and how many datagrams of
// boot were captured after killed (there must be none: the guest's host
// is dead).
type StreamAround struct {
	LastOld    Stamped
	HaveOld    bool
	MaxAcked   uint64
	First      Stamped
	HaveFirst  bool
	StaleAfter int
}

func AroundCrash(ds []Stamped, boot uint64, killed time.Time) StreamAround {
	var s StreamAround
	for _, d := range ds {
		switch {
		case d.Boot == boot:
			if !s.HaveOld || d.Seq > s.LastOld.Seq {
				s.LastOld, s.HaveOld = d, true
			}
			s.MaxAcked = max(s.MaxAcked, d.Acked)
			// A small slack for frames already in the bridge's queue.
			if d.At.After(killed.Add(50 * time.Millisecond)) {
				s.StaleAfter++
			}
		case d.Boot > boot && !s.HaveFirst:
			s.First, s.HaveFirst = d, true
		}
	}
	return s
}
