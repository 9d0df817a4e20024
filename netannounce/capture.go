package netannounce

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// PacketType is where a captured frame was going, as the kernel classified
// it (sockaddr_ll's sll_pkttype).
type PacketType uint8

// Packet types (linux/if_packet.h).
const (
	PacketHost      PacketType = unix.PACKET_HOST      // to this host
	PacketBroadcast PacketType = unix.PACKET_BROADCAST // link-layer broadcast
	PacketMulticast PacketType = unix.PACKET_MULTICAST // link-layer multicast
	PacketOtherHost PacketType = unix.PACKET_OTHERHOST // to another host (promiscuous)
	PacketOutgoing  PacketType = unix.PACKET_OUTGOING  // sent by this host
)

func (t PacketType) String() string {
	switch t {
	case PacketHost:
		return "host"
	case PacketBroadcast:
		return "broadcast"
	case PacketMulticast:
		return "multicast"
	case PacketOtherHost:
		return "otherhost"
	case PacketOutgoing:
		return "outgoing"
	}
	return fmt.Sprintf("PacketType(%d)", uint8(t))
}

// CapturedPacket is one frame read by a Capturer.
type CapturedPacket struct {
	// Timestamp is the kernel's receive time (SO_TIMESTAMPNS) when
	// KernelTimestamp is true, else the time the frame was read.
	Timestamp       time.Time
	KernelTimestamp bool
	Type            PacketType
	// Length is the frame's length on the wire; Data holds the first
	// len(Data) bytes of it (all of it unless longer than
	// CaptureOptions.SnapLen).
	Length int
	Data   []byte
	// Packet is Data decoded (lazily) by gopacket from the Ethernet
	// layer up, with CaptureInfo filled in.
	Packet gopacket.Packet
}

// CaptureOptions tunes Capture. The zero value captures every frame in both
// directions.
type CaptureOptions struct {
	// Filter, if set, selects the frames delivered; it runs on the
	// capture goroutine and must not block.
	Filter func(gopacket.Packet) bool
	// SkipOutgoing drops frames sent by this host through the interface.
	SkipOutgoing bool
	// Promiscuous also receives frames for other hosts, for as long as
	// the capture runs.
	Promiscuous bool
	// SnapLen is the most bytes kept per frame; 0 means 65536.
	SnapLen int
	// Queue is the capacity of the Packets channel; 0 means 1024. A
	// consumer slower than that makes the kernel drop frames, which
	// Stats reports.
	Queue int
	// SocketBuffer is the socket's receive buffer in bytes; 0 means
	// 4 MiB (forced beyond rmem_max when the caller has CAP_NET_ADMIN).
	SocketBuffer int
	// Logger receives start and stop records; nil means slog.Default().
	Logger *slog.Logger
}

// CaptureStats counts frames since the capture started, from the kernel's
// PACKET_STATISTICS.
type CaptureStats struct {
	Received uint64 // frames queued to the socket (including Dropped)
	Dropped  uint64 // frames the kernel dropped because the socket buffer was full
}

// Capturer reads frames from one interface until its context ends or Close
// is called. Frames arriving after Capture returned are seen.
type Capturer struct {
	iface   string
	file    *os.File
	raw     syscall.RawConn
	packets chan CapturedPacket
	cancel  context.CancelFunc
	closed  chan struct{} // the socket is closed
	done    chan struct{} // run returned and Packets is closed
	log     *slog.Logger

	mu    sync.Mutex
	err   error
	stats CaptureStats
}

// Capture opens an AF_PACKET socket on iface (in the calling thread's
// network namespace; needs CAP_NET_RAW) and delivers the frames that pass
// opts.Filter on Packets, with kernel receive timestamps, until ctx ends or
// Close is called.
func Capture(ctx context.Context, iface string, opts CaptureOptions) (*Capturer, error) {
	if opts.SnapLen <= 0 {
		opts.SnapLen = 1 << 16
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	if opts.SocketBuffer <= 0 {
		opts.SocketBuffer = 4 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("netannounce: capture %s: %w: %w", iface, ErrInterface, err)
	}
	// Protocol 0 until bind: a socket created for ETH_P_ALL would queue
	// frames of every interface before the bind narrows it to one.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("netannounce: capture %s: packet socket: %w", iface, err)
	}
	fail := func(what string, err error) (*Capturer, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("netannounce: capture %s: %s: %w", iface, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, opts.SocketBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, opts.SocketBuffer); err != nil {
			return fail("SO_RCVBUF", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	if opts.Promiscuous {
		// A membership, unlike IFF_PROMISC, is dropped by the kernel
		// when the socket closes, whatever happens to this process.
		mreq := &unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
			return fail("promiscuous mode", err)
		}
	}
	// A non-blocking fd makes the os.File use the netpoller, so Close
	// (from ctx or the caller) wakes a pending read.
	file := os.NewFile(uintptr(fd), "packet:"+iface)
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("netannounce: capture %s: %w", iface, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Capturer{
		iface:   iface,
		file:    file,
		raw:     raw,
		packets: make(chan CapturedPacket, opts.Queue),
		cancel:  cancel,
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
		log:     opts.Logger.With("iface", iface),
	}
	go func() {
		<-ctx.Done()
		c.collectStats() // the counters are lost with the socket
		file.Close()
		close(c.closed)
	}()
	go c.run(ctx, ifi.Index, opts)
	c.log.Debug("capture started", "promiscuous", opts.Promiscuous)
	return c, nil
}

// Packets delivers captured frames. It is closed when the capture ends;
// then Err says why.
func (c *Capturer) Packets() <-chan CapturedPacket { return c.packets }

// Err returns the error that ended the capture, or nil if it ended
// because its context ended or Close was called (or has not ended).
func (c *Capturer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close stops the capture, waits for it to end and closes the socket.
// Packets is closed afterwards; frames still queued in it stay readable.
func (c *Capturer) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Stats returns the kernel's counters since the capture started. After
// the capture ended they are final.
func (c *Capturer) Stats() CaptureStats {
	c.collectStats()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// collectStats adds the kernel's counters to c.stats; reading them resets
// them in the kernel. It does nothing once the socket is closed.
func (c *Capturer) collectStats() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.raw.Control(func(fd uintptr) {
		st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			return
		}
		c.stats.Received += uint64(st.Packets)
		c.stats.Dropped += uint64(st.Drops)
	})
}

func (c *Capturer) run(ctx context.Context, ifindex int, opts CaptureOptions) {
	defer func() {
		c.cancel()
		<-c.closed
		c.log.Debug("capture stopped", "stats", c.Stats())
		close(c.packets)
		close(c.done)
	}()
	buf := make([]byte, opts.SnapLen)
	oob := make([]byte, unix.CmsgSpace(16)) // one struct timespec
	decode := gopacket.DecodeOptions{Lazy: true, NoCopy: true}
	for {
		var (
			n, oobn int
			from    unix.Sockaddr
			rerr    error
		)
		err := c.raw.Read(func(fd uintptr) bool {
			for {
				// MSG_TRUNC: n is the frame's real length even when
				// it did not fit.
				n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_TRUNC)
				if rerr != unix.EINTR {
					break
				}
			}
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if ctx.Err() == nil {
				c.mu.Lock()
				c.err = fmt.Errorf("netannounce: capture %s: read: %w", c.iface, err)
				c.mu.Unlock()
				c.log.Error("capture failed", "err", err)
			}
			return
		}
		cp := CapturedPacket{Length: n, Timestamp: time.Now()}
		if ts, ok := kernelTimestamp(oob[:oobn]); ok {
			cp.Timestamp, cp.KernelTimestamp = ts, true
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			cp.Type = PacketType(ll.Pkttype)
		}
		if opts.SkipOutgoing && cp.Type == PacketOutgoing {
			continue
		}
		cp.Data = append([]byte(nil), buf[:min(n, len(buf))]...)
		cp.Packet = gopacket.NewPacket(cp.Data, layers.LayerTypeEthernet, decode)
		md := cp.Packet.Metadata()
		md.Timestamp = cp.Timestamp
		md.CaptureLength = len(cp.Data)
		md.Length = n
		md.InterfaceIndex = ifindex
		md.Truncated = len(cp.Data) < n
		if opts.Filter != nil && !opts.Filter(cp.Packet) {
			continue
		}
		select {
		case c.packets <- cp:
		case <-ctx.Done():
			return
		}
	}
}

// kernelTimestamp extracts the SCM_TIMESTAMPNS control message: a struct
// timespec of two native longs.
func kernelTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		switch len(m.Data) {
		case 16:
			sec := int64(binary.NativeEndian.Uint64(m.Data[:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return time.Unix(sec, nsec), true
		case 8:
			sec := int32(binary.NativeEndian.Uint32(m.Data[:4]))
			nsec := int32(binary.NativeEndian.Uint32(m.Data[4:]))
			return time.Unix(int64(sec), int64(nsec)), true
		}
	}
	return time.Time{}, false
}
