package netannounce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/internal/ctxtime"
)

// Defaults for Options; see the package documentation for the reasoning.
const (
	DefaultCount    = 5
	DefaultInterval = 200 * time.Millisecond
)

// Errors returned (wrapped) for invalid input to Announce.
var (
	ErrInvalidMAC     = errors.New("invalid MAC address")
	ErrNoAddresses    = errors.New("no IP addresses to announce")
	ErrInvalidAddress = errors.New("invalid IP address")
	ErrInterface      = errors.New("unusable interface")
)

// Options tunes Announce. The zero value means the defaults.
type Options struct {
	// Count is the number of rounds. Each round sends, per IPv4 address,
	// a gratuitous ARP request and (half an Interval later) a gratuitous
	// ARP reply, and per IPv6 address one unsolicited Neighbor
	// Advertisement. 0 means DefaultCount.
	Count int
	// Interval is the time from one round to the next. 0 means
	// DefaultInterval.
	Interval time.Duration
	// Logger receives one record per Announce; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Count < 0 {
		return o, fmt.Errorf("negative count %d", o.Count)
	}
	if o.Interval < 0 {
		return o, fmt.Errorf("negative interval %v", o.Interval)
	}
	if o.Count == 0 {
		o.Count = DefaultCount
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Announce tells the L2 network behind iface (the bridge the VM's NIC is
// on) that mac and ips are now here: gratuitous ARP for every IPv4 address
// and unsolicited Neighbor Advertisements for every IPv6 address, all with
// Ethernet source mac, repeated opts.Count times. It returns after the last
// frame is sent, or early with ctx's error. Errors name the interface.
//
// IPv4-mapped IPv6 addresses are announced as IPv4, zones are ignored and
// duplicates are announced once. Announce needs CAP_NET_RAW and resolves
// iface in the calling thread's network namespace.
func Announce(ctx context.Context, iface string, mac net.HardwareAddr, ips []netip.Addr, opts Options) error {
	if err := checkMAC(mac); err != nil {
		return fmt.Errorf("netannounce: %s: %w", iface, err)
	}
	mac = append(net.HardwareAddr(nil), mac...)
	v4, v6, err := splitAddrs(ips)
	if err != nil {
		return fmt.Errorf("netannounce: %s: %w", iface, err)
	}
	opts, err = opts.withDefaults()
	if err != nil {
		return fmt.Errorf("netannounce: %s: %w", iface, err)
	}

	var requests, replies, nas [][]byte
	for _, ip := range v4 {
		req, err := buildARP(mac, ip, layers.ARPRequest)
		if err != nil {
			return fmt.Errorf("netannounce: %s: %w", iface, err)
		}
		rep, err := buildARP(mac, ip, layers.ARPReply)
		if err != nil {
			return fmt.Errorf("netannounce: %s: %w", iface, err)
		}
		requests, replies = append(requests, req), append(replies, rep)
	}
	for _, ip := range v6 {
		na, err := buildNA(mac, ip)
		if err != nil {
			return fmt.Errorf("netannounce: %s: %w", iface, err)
		}
		nas = append(nas, na)
	}

	ifi, err := lookupInterface(iface)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netannounce: %s: %w", iface, err)
	}
	// Protocol 0: the socket receives nothing, it only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netannounce: %s: packet socket: %w", iface, err)
	}
	defer unix.Close(fd)

	send := func(frame []byte, proto uint16) error {
		sa := &unix.SockaddrLinklayer{
			Ifindex:  ifi.Index,
			Protocol: htons(proto),
			Halen:    6,
		}
		copy(sa.Addr[:], frame[:6]) // the frame's destination MAC
		for {
			err := unix.Sendto(fd, frame, 0, sa)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("netannounce: %s: send: %w", iface, err)
			}
			return nil
		}
	}

	start := time.Now()
	sent := 0
	for round := 0; round < opts.Count; round++ {
		for _, f := range requests {
			if err := send(f, unix.ETH_P_ARP); err != nil {
				return err
			}
			sent++
		}
		for _, f := range nas {
			if err := send(f, unix.ETH_P_IPV6); err != nil {
				return err
			}
			sent++
		}
		if len(replies) > 0 {
			if err := ctxtime.Sleep(ctx, opts.Interval/2); err != nil {
				return fmt.Errorf("netannounce: %s: %w", iface, err)
			}
			for _, f := range replies {
				if err := send(f, unix.ETH_P_ARP); err != nil {
					return err
				}
				sent++
			}
		}
		if round == opts.Count-1 {
			break
		}
		wait := opts.Interval
		if len(replies) > 0 {
			wait -= opts.Interval / 2
		}
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("netannounce: %s: %w", iface, err)
		}
	}
	opts.Logger.Info("announced addresses",
		"iface", iface, "mac", mac.String(), "ipv4", v4, "ipv6", v6,
		"rounds", opts.Count, "frames", sent, "took", time.Since(start))
	return nil
}

func lookupInterface(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("netannounce: %s: %w: %w", name, ErrInterface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("netannounce: %s: %w: not an Ethernet interface (hardware address %q)", name, ErrInterface, ifi.HardwareAddr)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("netannounce: %s: %w: interface is down", name, ErrInterface)
	}
	return ifi, nil
}

// checkMAC accepts only a 6-byte unicast address that is not all zeros:
// a switch never learns a multicast source, and announcing one would be
// meaningless.
func checkMAC(mac net.HardwareAddr) error {
	switch {
	case mac == nil:
		return fmt.Errorf("%w: nil", ErrInvalidMAC)
	case len(mac) != 6:
		return fmt.Errorf("%w: %q is %d bytes, want 6 (Ethernet)", ErrInvalidMAC, mac, len(mac))
	case mac[0]&1 != 0:
		return fmt.Errorf("%w: %s is a multicast/broadcast address", ErrInvalidMAC, mac)
	case mac[0]|mac[1]|mac[2]|mac[3]|mac[4]|mac[5] == 0:
		return fmt.Errorf("%w: all zeros", ErrInvalidMAC)
	}
	return nil
}

// splitAddrs validates ips and splits them by family, without duplicates.
func splitAddrs(ips []netip.Addr) (v4, v6 []netip.Addr, err error) {
	if len(ips) == 0 {
		return nil, nil, ErrNoAddresses
	}
	seen := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		if !ip.IsValid() {
			return nil, nil, fmt.Errorf("%w: zero netip.Addr", ErrInvalidAddress)
		}
		ip = ip.Unmap().WithZone("")
		switch {
		case ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast():
			return nil, nil, fmt.Errorf("%w: %s is not a unicast host address", ErrInvalidAddress, ip)
		case ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, nil, fmt.Errorf("%w: %s is the broadcast address", ErrInvalidAddress, ip)
		}
		if seen[ip] {
			continue
		}
		seen[ip] = true
		if ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	return v4, v6, nil
}

// buildARP returns a broadcast gratuitous ARP frame (Ethernet source and
// sender hardware address mac, sender = target protocol address ip). A
// request carries a zero target hardware address (RFC 5227's ARP
// Announcement), a reply carries mac there, which Linux requires to treat
// a reply as gratuitous.
func buildARP(mac net.HardwareAddr, ip netip.Addr, op uint16) ([]byte, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("%w: ARP for non-IPv4 address %s", ErrInvalidAddress, ip)
	}
	tha := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	if op == layers.ARPReply {
		tha = mac
	}
	spa := ip.As4()
	eth := &layers.Ethernet{
		SrcMAC:       mac,
		DstMAC:       net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		EthernetType: layers.EthernetTypeARP,
	}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         op,
		SourceHwAddress:   mac,
		SourceProtAddress: spa[:],
		DstHwAddress:      tha,
		DstProtAddress:    spa[:],
	}
	buf := gopacket.NewSerializeBuffer()
	// Ethernet.SerializeTo pads to the 60-byte minimum frame.
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		return nil, fmt.Errorf("build ARP for %s: %w", ip, err)
	}
	return buf.Bytes(), nil
}

// NDP constants (RFC 4861).
const (
	ndpHopLimit  = 255
	naFlagRouter = 0x80
	naFlagSolic  = 0x40
	naFlagOver   = 0x20
)

// buildNA returns an unsolicited Neighbor Advertisement for ip with
// target link-layer address mac, from ip to ff02::1.
func buildNA(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("%w: neighbour advertisement for non-IPv6 address %s", ErrInvalidAddress, ip)
	}
	allNodes := netip.MustParseAddr("ff02::1")
	eth := &layers.Ethernet{
		SrcMAC:       mac,
		DstMAC:       net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, // RFC 2464 §7 mapping of ff02::1
		EthernetType: layers.EthernetTypeIPv6,
	}
	ip6 := &layers.IPv6{
		Version:    6,
		NextHeader: layers.IPProtocolICMPv6,
		HopLimit:   ndpHopLimit,
		SrcIP:      ip.AsSlice(),
		DstIP:      allNodes.AsSlice(),
	}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip6); err != nil {
		return nil, fmt.Errorf("build NA for %s: %w", ip, err)
	}
	na := &layers.ICMPv6NeighborAdvertisement{
		Flags:         naFlagOver,
		TargetAddress: ip.AsSlice(),
		Options: layers.ICMPv6Options{{
			Type: layers.ICMPv6OptTargetAddress,
			Data: append([]byte(nil), mac...),
		}},
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip6, icmp, na); err != nil {
		return nil, fmt.Errorf("build NA for %s: %w", ip, err)
	}
	return buf.Bytes(), nil
}

// htons converts a 16-bit value to network byte order, as sockaddr_ll's
// protocol field wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
