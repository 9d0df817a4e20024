package netannounce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	testMAC = net.HardwareAddr{0x02, 0x54, 0x64, 0x00, 0x00, 0x01}
	testV4  = netip.MustParseAddr("192.0.2.10")
	testV6  = netip.MustParseAddr("2001:db8::10")
)

// icmpv6Sum is an independent RFC 1071 checksum over the IPv6
// pseudo-header and msg, for checking the package's frames: it returns 0
// for a message whose checksum field is right.
func icmpv6Sum(src, dst net.IP, msg []byte) uint16 {
	var b []byte
	b = append(b, src.To16()...)
	b = append(b, dst.To16()...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, 0, 0, 0, 58)
	b = append(b, msg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		sum += uint64(b[i])<<8 | uint64(b[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checkARPFrame decodes frame with gopacket and checks every field of a
// gratuitous ARP for mac and ip.
func checkARPFrame(t *testing.T, frame []byte, mac net.HardwareAddr, ip netip.Addr, op uint16) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if eth == nil || arp == nil {
		t.Fatalf("not Ethernet+ARP: %v", p)
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !bytes.Equal(eth.SrcMAC, mac) || !bytes.Equal(eth.DstMAC, bcast) || eth.EthernetType != layers.EthernetTypeARP {
		t.Errorf("Ethernet %v -> %v type %v, want %v -> %v ARP", eth.SrcMAC, eth.DstMAC, eth.EthernetType, mac, bcast)
	}
	if arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 || arp.HwAddressSize != 6 || arp.ProtAddressSize != 4 {
		t.Errorf("ARP header %v/%v/%d/%d", arp.AddrType, arp.Protocol, arp.HwAddressSize, arp.ProtAddressSize)
	}
	if arp.Operation != op {
		t.Errorf("ARP op %d, want %d", arp.Operation, op)
	}
	if !bytes.Equal(arp.SourceHwAddress, mac) {
		t.Errorf("sender MAC %v, want %v", net.HardwareAddr(arp.SourceHwAddress), mac)
	}
	want4 := ip.As4()
	if !bytes.Equal(arp.SourceProtAddress, want4[:]) || !bytes.Equal(arp.DstProtAddress, want4[:]) {
		t.Errorf("sender IP %v target IP %v, want both %v", net.IP(arp.SourceProtAddress), net.IP(arp.DstProtAddress), ip)
	}
	wantTHA := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	if op == layers.ARPReply {
		wantTHA = mac
	}
	if !bytes.Equal(arp.DstHwAddress, wantTHA) {
		t.Errorf("target MAC %v, want %v", net.HardwareAddr(arp.DstHwAddress), wantTHA)
	}
	if len(frame) < 60 {
		t.Errorf("frame of %d bytes, below the Ethernet minimum of 60", len(frame))
	}
}

// checkNAFrame decodes frame with gopacket and checks every field of an
// unsolicited Neighbor Advertisement for mac and ip.
func checkNAFrame(t *testing.T, frame []byte, mac net.HardwareAddr, ip netip.Addr) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if eth == nil || ip6 == nil || icmp == nil || na == nil {
		t.Fatalf("not Ethernet+IPv6+ICMPv6 NA: %v", p)
	}
	allNodesMAC := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	if !bytes.Equal(eth.SrcMAC, mac) || !bytes.Equal(eth.DstMAC, allNodesMAC) || eth.EthernetType != layers.EthernetTypeIPv6 {
		t.Errorf("Ethernet %v -> %v type %v, want %v -> %v IPv6", eth.SrcMAC, eth.DstMAC, eth.EthernetType, mac, allNodesMAC)
	}
	if !ip6.SrcIP.Equal(ip.AsSlice()) || !ip6.DstIP.Equal(net.ParseIP("ff02::1")) {
		t.Errorf("IPv6 %v -> %v, want %v -> ff02::1", ip6.SrcIP, ip6.DstIP, ip)
	}
	if ip6.HopLimit != 255 || ip6.NextHeader != layers.IPProtocolICMPv6 {
		t.Errorf("IPv6 hop limit %d next header %v, want 255 ICMPv6", ip6.HopLimit, ip6.NextHeader)
	}
	if int(ip6.Length) != len(ip6.Payload) || ip6.Length != 32 {
		t.Errorf("IPv6 payload length %d (%d bytes), want 32", ip6.Length, len(ip6.Payload))
	}
	if icmp.TypeCode.Type() != 136 || icmp.TypeCode.Code() != 0 {
		t.Errorf("ICMPv6 %v, want type 136 code 0", icmp.TypeCode)
	}
	if s := icmpv6Sum(ip6.SrcIP, ip6.DstIP, ip6.Payload); s != 0 {
		t.Errorf("ICMPv6 checksum %#04x is wrong (residue %#04x)", icmp.Checksum, s)
	}
	if !na.Override() || na.Solicited() || na.Router() || na.Flags != 0x20 {
		t.Errorf("NA flags %#02x (R=%v S=%v O=%v), want only Override", na.Flags, na.Router(), na.Solicited(), na.Override())
	}
	if !na.TargetAddress.Equal(ip.AsSlice()) {
		t.Errorf("NA target %v, want %v", na.TargetAddress, ip)
	}
	if len(na.Options) != 1 || na.Options[0].Type != layers.ICMPv6OptTargetAddress || !bytes.Equal(na.Options[0].Data, mac) {
		t.Errorf("NA options %v, want one Target Link-Layer Address %v", na.Options, mac)
	}
}

func TestBuildFrames(t *testing.T) {
	for _, op := range []uint16{layers.ARPRequest, layers.ARPReply} {
		f, err := buildARP(testMAC, testV4, op)
		if err != nil {
			t.Fatal(err)
		}
		checkARPFrame(t, f, testMAC, testV4, op)
		a, err := ParseAnnouncement(f)
		if err != nil {
			t.Fatalf("ParseAnnouncement(ARP op %d): %v", op, err)
		}
		wantKind := map[uint16]Kind{layers.ARPRequest: KindARPRequest, layers.ARPReply: KindARPReply}[op]
		if a.Kind != wantKind || a.Addr != testV4 || !bytes.Equal(a.MAC, testMAC) || !bytes.Equal(a.EthSrc, testMAC) {
			t.Errorf("ParseAnnouncement = %+v", a)
		}
	}
	for _, ip := range []netip.Addr{testV6, netip.MustParseAddr("fe80::5054:ff:fe00:1")} {
		f, err := buildNA(testMAC, ip)
		if err != nil {
			t.Fatal(err)
		}
		checkNAFrame(t, f, testMAC, ip)
		a, err := ParseAnnouncement(f)
		if err != nil {
			t.Fatalf("ParseAnnouncement(NA): %v", err)
		}
		if a.Kind != KindNeighborAdvertisement || a.Addr != ip || a.Src != ip || !bytes.Equal(a.MAC, testMAC) ||
			!a.Override || a.Solicited || a.Router || a.HopLimit != 255 || a.Dst != netip.MustParseAddr("ff02::1") {
			t.Errorf("ParseAnnouncement = %+v", a)
		}
	}
	if _, err := buildARP(testMAC, testV6, layers.ARPRequest); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("ARP for IPv6: %v", err)
	}
	if _, err := buildNA(testMAC, testV4); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("NA for IPv4: %v", err)
	}
}

// naVariant builds an NA with gopacket like buildNA but with the given
// changes, and a correct checksum.
func naVariant(t *testing.T, flags uint8, hop uint8, code uint8, opts layers.ICMPv6Options) []byte {
	t.Helper()
	ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: hop,
		SrcIP: testV6.AsSlice(), DstIP: net.ParseIP("ff02::1")}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(136, code)}
	if err := icmp.SetNetworkLayerForChecksum(ip6); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: testMAC, DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6},
		ip6, icmp, &layers.ICMPv6NeighborAdvertisement{Flags: flags, TargetAddress: testV6.AsSlice(), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseAnnouncementRejects(t *testing.T) {
	req, err := buildARP(testMAC, testV4, layers.ARPRequest)
	if err != nil {
		t.Fatal(err)
	}
	na, err := buildNA(testMAC, testV6)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f []byte, fn func(b []byte)) []byte {
		b := bytes.Clone(f)
		fn(b)
		return b
	}
	tlla := layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: testMAC}}
	udp := func() []byte {
		buf := gopacket.NewSerializeBuffer()
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(192, 0, 2, 1), DstIP: net.IPv4(192, 0, 2, 2)}
		u := &layers.UDP{SrcPort: 1, DstPort: 2}
		_ = u.SetNetworkLayerForChecksum(ip4)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			&layers.Ethernet{SrcMAC: testMAC, DstMAC: testMAC, EthernetType: layers.EthernetTypeIPv4}, ip4, u, gopacket.Payload("x")); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrMalformed},
		{"udp", udp, ErrNotAnnouncement},
		{"arp-not-gratuitous", mutate(req, func(b []byte) { b[14+27]++ }), ErrNotAnnouncement},
		{"arp-op-3", mutate(req, func(b []byte) { b[14+7] = 3 }), ErrNotAnnouncement},
		{"arp-multicast-sender", mutate(req, func(b []byte) { b[14+8] |= 1 }), ErrMalformed},
		{"arp-truncated", req[:14+20], ErrMalformed},
		{"na-bad-checksum", mutate(na, func(b []byte) { b[14+40+2] ^= 0xff }), ErrMalformed},
		{"na-target-changed", mutate(na, func(b []byte) { b[14+40+8+15]++ }), ErrMalformed},
		{"na-hop-limit", naVariant(t, 0x20, 64, 0, tlla), ErrMalformed},
		{"na-code", naVariant(t, 0x20, 255, 1, tlla), ErrMalformed},
		{"na-solicited", naVariant(t, 0x60, 255, 0, tlla), ErrMalformed}, // solicited to a multicast group
		{"na-no-tlla", naVariant(t, 0x20, 255, 0, nil), ErrNotAnnouncement},
		{"na-truncated", na[:len(na)-8], ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAnnouncement(tc.frame)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseAnnouncement = %+v, %v; want error %v", a, err, tc.want)
			}
		})
	}
}

// FuzzParseAnnouncement checks that any frame either fails with one of the
// two documented errors or yields a consistent announcement that, rebuilt
// by the package's own builders, parses back to the same thing.
func FuzzParseAnnouncement(f *testing.F) {
	for _, op := range []uint16{layers.ARPRequest, layers.ARPReply} {
		b, err := buildARP(testMAC, testV4, op)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	b, err := buildNA(testMAC, testV6)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		a, err := ParseAnnouncement(frame)
		if err != nil {
			if !errors.Is(err, ErrNotAnnouncement) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps neither ErrNotAnnouncement nor ErrMalformed", err)
			}
			return
		}
		if checkMAC(a.MAC) != nil || !a.Addr.IsValid() || len(a.EthSrc) != 6 {
			t.Fatalf("inconsistent announcement %+v", a)
		}
		var rebuilt []byte
		switch a.Kind {
		case KindARPRequest, KindARPReply:
			if !a.Addr.Is4() {
				t.Fatalf("ARP announcement for %s", a.Addr)
			}
			op := uint16(layers.ARPRequest)
			if a.Kind == KindARPReply {
				op = layers.ARPReply
			}
			rebuilt, err = buildARP(a.MAC, a.Addr, op)
		case KindNeighborAdvertisement:
			if !a.Addr.Is6() || a.HopLimit != 255 || a.Solicited {
				t.Fatalf("inconsistent NA %+v", a)
			}
			if _, _, err := splitAddrs([]netip.Addr{a.Addr}); err != nil || a.Addr.Is4In6() {
				return // a target Announce itself would never announce
			}
			rebuilt, err = buildNA(a.MAC, a.Addr)
		default:
			t.Fatalf("unknown kind %v", a.Kind)
		}
		if err != nil {
			t.Fatalf("rebuild %+v: %v", a, err)
		}
		b, err := ParseAnnouncement(rebuilt)
		if err != nil {
			t.Fatalf("rebuilt frame of %+v: %v", a, err)
		}
		if b.Kind != a.Kind || b.Addr != a.Addr || !bytes.Equal(b.MAC, a.MAC) {
			t.Fatalf("round trip %+v -> %+v", a, b)
		}
	})
}
