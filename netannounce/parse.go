package netannounce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Kind says which form of announcement a frame is.
type Kind uint8

// The kinds of announcement frame Announce sends and ParseAnnouncement
// recognises.
const (
	KindARPRequest            Kind = iota + 1 // gratuitous ARP request
	KindARPReply                              // gratuitous ARP reply
	KindNeighborAdvertisement                 // unsolicited IPv6 Neighbor Advertisement
)

func (k Kind) String() string {
	switch k {
	case KindARPRequest:
		return "arp-request"
	case KindARPReply:
		return "arp-reply"
	case KindNeighborAdvertisement:
		return "neighbor-advertisement"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Errors of ParseAnnouncement. ErrNotAnnouncement marks frames that are
// fine but announce nothing (other traffic, ordinary ARP requests,
// solicited NAs); ErrMalformed marks frames that receivers would drop.
var (
	ErrNotAnnouncement = errors.New("not an address announcement")
	ErrMalformed       = errors.New("malformed announcement")
)

// Announcement is a decoded gratuitous ARP or unsolicited Neighbor
// Advertisement.
type Announcement struct {
	Kind   Kind
	EthSrc net.HardwareAddr
	EthDst net.HardwareAddr
	VLAN   uint16 // 802.1Q VLAN ID, 0 if untagged

	// MAC is the link-layer address announced for Addr: the ARP sender
	// hardware address or the NA's Target Link-Layer Address option.
	MAC  net.HardwareAddr
	Addr netip.Addr // ARP sender (= target) address or NA target

	// ARP only: the target hardware address (zero in Announce's requests,
	// MAC in its replies).
	TargetHW net.HardwareAddr

	// NA only: the IPv6 header and the NA's flags. The checksum has been
	// verified.
	Src, Dst                    netip.Addr
	HopLimit                    uint8
	Router, Solicited, Override bool
}

// ParseAnnouncement decodes an Ethernet frame (optionally 802.1Q-tagged)
// with gopacket and returns the announcement it carries. Errors wrap
// ErrNotAnnouncement or ErrMalformed.
func ParseAnnouncement(frame []byte) (Announcement, error) {
	return AnnouncementFromPacket(gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default))
}

// AnnouncementFromPacket is ParseAnnouncement for an already decoded
// packet, e.g. CapturedPacket.Packet in a Capture filter.
func AnnouncementFromPacket(p gopacket.Packet) (Announcement, error) {
	var a Announcement
	eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok {
		if el := p.ErrorLayer(); el != nil {
			return a, fmt.Errorf("%w: %w", ErrMalformed, el.Error())
		}
		return a, fmt.Errorf("%w: no Ethernet header", ErrNotAnnouncement)
	}
	a.EthSrc = append(net.HardwareAddr(nil), eth.SrcMAC...)
	a.EthDst = append(net.HardwareAddr(nil), eth.DstMAC...)
	if q, ok := p.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); ok {
		a.VLAN = q.VLANIdentifier
	}
	if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		return a, fromARP(&a, arp)
	}
	ip6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !ok || ip6.NextHeader != layers.IPProtocolICMPv6 {
		if el := p.ErrorLayer(); el != nil && p.Layer(layers.LayerTypeIPv4) == nil {
			return a, fmt.Errorf("%w: %w", ErrMalformed, el.Error())
		}
		return a, fmt.Errorf("%w: neither ARP nor ICMPv6", ErrNotAnnouncement)
	}
	icmp, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if !ok {
		return a, fmt.Errorf("%w: truncated ICMPv6 header", ErrMalformed)
	}
	if icmp.TypeCode.Type() != layers.ICMPv6TypeNeighborAdvertisement {
		return a, fmt.Errorf("%w: ICMPv6 %v", ErrNotAnnouncement, icmp.TypeCode)
	}
	na, ok := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if !ok {
		err := errors.New("truncated neighbour advertisement")
		if el := p.ErrorLayer(); el != nil {
			err = el.Error()
		}
		return a, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return a, fromNA(&a, ip6, icmp, na)
}

func fromARP(a *Announcement, arp *layers.ARP) error {
	if arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
		arp.HwAddressSize != 6 || arp.ProtAddressSize != 4 {
		return fmt.Errorf("%w: ARP for hardware type %v, protocol %v", ErrNotAnnouncement, arp.AddrType, arp.Protocol)
	}
	switch arp.Operation {
	case layers.ARPRequest:
		a.Kind = KindARPRequest
	case layers.ARPReply:
		a.Kind = KindARPReply
	default:
		return fmt.Errorf("%w: ARP operation %d", ErrNotAnnouncement, arp.Operation)
	}
	spa, _ := netip.AddrFromSlice(arp.SourceProtAddress)
	tpa, _ := netip.AddrFromSlice(arp.DstProtAddress)
	if spa != tpa {
		return fmt.Errorf("%w: ARP from %s for %s is not gratuitous", ErrNotAnnouncement, spa, tpa)
	}
	if spa.IsUnspecified() {
		return fmt.Errorf("%w: ARP for 0.0.0.0", ErrNotAnnouncement)
	}
	a.Addr = spa
	a.MAC = append(net.HardwareAddr(nil), arp.SourceHwAddress...)
	a.TargetHW = append(net.HardwareAddr(nil), arp.DstHwAddress...)
	if err := checkMAC(a.MAC); err != nil {
		return fmt.Errorf("%w: sender: %w", ErrMalformed, err)
	}
	return nil
}

func fromNA(a *Announcement, ip6 *layers.IPv6, icmp *layers.ICMPv6, na *layers.ICMPv6NeighborAdvertisement) error {
	a.Kind = KindNeighborAdvertisement
	a.Src, _ = netip.AddrFromSlice(ip6.SrcIP)
	a.Dst, _ = netip.AddrFromSlice(ip6.DstIP)
	a.HopLimit = ip6.HopLimit
	a.Addr, _ = netip.AddrFromSlice(na.TargetAddress)
	a.Router = na.Router()
	a.Solicited = na.Solicited()
	a.Override = na.Override()

	// The validity checks of RFC 4861 §7.1.2 that a receiver applies.
	msg := ip6.Payload // the whole ICMPv6 message, cut to the IPv6 payload length
	if len(msg) != int(ip6.Length) {
		return fmt.Errorf("%w: IPv6 payload length %d, %d bytes present", ErrMalformed, ip6.Length, len(msg))
	}
	if !validICMPv6Checksum(a.Src, a.Dst, msg) {
		return fmt.Errorf("%w: bad ICMPv6 checksum %#04x", ErrMalformed, icmp.Checksum)
	}
	if a.HopLimit != ndpHopLimit {
		return fmt.Errorf("%w: hop limit %d, want %d", ErrMalformed, a.HopLimit, ndpHopLimit)
	}
	if icmp.TypeCode.Code() != 0 {
		return fmt.Errorf("%w: ICMPv6 code %d", ErrMalformed, icmp.TypeCode.Code())
	}
	if a.Addr.IsMulticast() {
		return fmt.Errorf("%w: multicast target %s", ErrMalformed, a.Addr)
	}
	if a.Solicited && a.Dst.IsMulticast() {
		return fmt.Errorf("%w: solicited advertisement to %s", ErrMalformed, a.Dst)
	}
	for _, o := range na.Options {
		if o.Type != layers.ICMPv6OptTargetAddress {
			continue
		}
		if len(o.Data) != 6 {
			return fmt.Errorf("%w: target link-layer address option of %d bytes", ErrMalformed, len(o.Data))
		}
		a.MAC = append(net.HardwareAddr(nil), o.Data...)
	}
	if a.Solicited {
		return fmt.Errorf("%w: solicited neighbour advertisement", ErrNotAnnouncement)
	}
	if a.MAC == nil {
		return fmt.Errorf("%w: neighbour advertisement without target link-layer address", ErrNotAnnouncement)
	}
	return nil
}

// validICMPv6Checksum reports whether msg, an ICMPv6 message from src to
// dst, has a correct checksum (RFC 4443 §2.3, pseudo-header of RFC 8200
// §8.1): the one's-complement sum over pseudo-header and message, checksum
// field included, is all ones.
func validICMPv6Checksum(src, dst netip.Addr, msg []byte) bool {
	if !src.Is6() || !dst.Is6() || len(msg) < 4 {
		return false
	}
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var tail [8]byte
	binary.BigEndian.PutUint32(tail[:4], uint32(len(msg)))
	tail[7] = uint8(layers.IPProtocolICMPv6)
	add(tail[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}
