package netannounce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tandemhci/tandem/internal/testcluster"
)

func TestAnnounceValidation(t *testing.T) {
	ctx := context.Background()
	ips := []netip.Addr{testV4}
	for _, tc := range []struct {
		name  string
		iface string
		mac   net.HardwareAddr
		ips   []netip.Addr
		opts  Options
		want  error
	}{
		{"nil-mac", "lo", nil, ips, Options{}, ErrInvalidMAC},
		{"short-mac", "lo", testMAC[:4], ips, Options{}, ErrInvalidMAC},
		{"multicast-mac", "lo", net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}, ips, Options{}, ErrInvalidMAC},
		{"broadcast-mac", "lo", net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ips, Options{}, ErrInvalidMAC},
		{"zero-mac", "lo", make(net.HardwareAddr, 6), ips, Options{}, ErrInvalidMAC},
		{"no-addresses", "lo", testMAC, nil, Options{}, ErrNoAddresses},
		{"zero-addr", "lo", testMAC, []netip.Addr{{}}, Options{}, ErrInvalidAddress},
		{"unspecified", "lo", testMAC, []netip.Addr{netip.IPv6Unspecified()}, Options{}, ErrInvalidAddress},
		{"multicast-ip", "lo", testMAC, []netip.Addr{netip.MustParseAddr("224.0.0.1")}, Options{}, ErrInvalidAddress},
		{"broadcast-ip", "lo", testMAC, []netip.Addr{netip.MustParseAddr("255.255.255.255")}, Options{}, ErrInvalidAddress},
		{"loopback-ip", "lo", testMAC, []netip.Addr{netip.MustParseAddr("::1")}, Options{}, ErrInvalidAddress},
		{"unknown-interface", "tdmnoexist0", testMAC, ips, Options{}, ErrInterface},
		{"loopback-interface", "lo", testMAC, ips, Options{}, ErrInterface}, // no Ethernet address
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Announce(ctx, tc.iface, tc.mac, tc.ips, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Announce = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.iface) {
				t.Errorf("error %q does not name interface %s", err, tc.iface)
			}
		})
	}
	if err := Announce(ctx, "lo", testMAC, ips, Options{Count: -1}); err == nil {
		t.Error("negative count accepted")
	}
	v4, v6, err := splitAddrs([]netip.Addr{
		netip.MustParseAddr("::ffff:192.0.2.10"), testV4, testV6, netip.MustParseAddr("2001:db8::10%eth0"),
	})
	if err != nil || len(v4) != 1 || v4[0] != testV4 || len(v6) != 1 || v6[0] != testV6 {
		t.Errorf("splitAddrs = %v %v %v, want [%s] [%s]", v4, v6, err, testV4, testV6)
	}
}

// TestCaptureLoopback checks the general capture path on lo: any frame,
// kernel timestamp, direction, filter, stats. It creates nothing.
func TestCaptureLoopback(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := layers.UDPPort(conn.LocalAddr().(*net.UDPAddr).Port)
	c, err := Capture(ctx, "lo", CaptureOptions{
		SkipOutgoing: true,
		Filter: func(p gopacket.Packet) bool {
			u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			return ok && u.DstPort == port
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := time.Now()
	if _, err := conn.WriteToUDP([]byte("tandem"), conn.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	var got CapturedPacket
	select {
	case got = <-c.Packets():
	case <-ctx.Done():
		t.Fatal("datagram not captured")
	}
	if !got.KernelTimestamp || got.Timestamp.Before(before.Add(-time.Second)) {
		t.Errorf("timestamp %v (kernel %v), sent at %v", got.Timestamp, got.KernelTimestamp, before)
	}
	if got.Type != PacketHost {
		t.Errorf("packet type %v, want host (outgoing copy skipped)", got.Type)
	}
	if app := got.Packet.ApplicationLayer(); app == nil || string(app.Payload()) != "tandem" {
		t.Errorf("payload %v", app)
	}
	if md := got.Packet.Metadata(); md.Length != got.Length || md.CaptureLength != len(got.Data) || !md.Timestamp.Equal(got.Timestamp) {
		t.Errorf("metadata %+v", md.CaptureInfo)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range c.Packets() { // drained and closed after Close
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
	if st := c.Stats(); st.Received == 0 {
		t.Errorf("stats %+v: nothing received", st)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (AF_PACKET sockets, network namespaces)")
	}
}

// TestAnnounceTakeover is the address takeover of a VM restarted on
// another node: announced from a host's VM bridge, the frames reach the
// switch namespace's br1 (the L2 segment where a real switch and the
// peers are) with every field right, the switch moves the MAC to the new
// host's port, and a peer's stale neighbour entries for both addresses
// are overridden with the VM's MAC.
func TestAnnounceTakeover(t *testing.T) {
	testcluster.Require(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	prefix := netip.MustParsePrefix(c.VMSubnet)
	a4 := prefix.Addr().As4()
	a4[3] = 200
	v4 := netip.AddrFrom4(a4)
	a4[3] = 201
	sentinelIP := netip.AddrFrom4(a4)
	v6 := netip.MustParseAddr("fd00:98::200")
	pid := os.Getpid()
	mac := net.HardwareAddr{0x02, 0x54, 0x64, byte(pid >> 8), byte(pid), 0x01}
	sentinelMAC := net.HardwareAddr{0x02, 0x54, 0x64, byte(pid >> 8), byte(pid), 0x02}
	oldMAC := net.HardwareAddr{0x02, 0x54, 0x64, 0xee, 0xee, 0xee}
	const count = 3

	// A peer on the VM network (the switch namespace, on br1) has stale
	// entries naming another MAC for both addresses, as after an address
	// moved between NICs.
	for _, args := range [][]string{
		{"ip", "neigh", "replace", v4.String(), "lladdr", oldMAC.String(), "dev", "br1", "nud", "stale"},
		{"ip", "-6", "neigh", "replace", v6.String(), "lladdr", oldMAC.String(), "dev", "br1", "nud", "stale"},
	} {
		if _, err := c.ExecSwitch(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"ip", "neigh", "show", v4.String(), "dev", "br1"},
		{"ip", "-6", "neigh", "show", v6.String(), "dev", "br1"},
	} {
		out, err := c.ExecSwitch(ctx, args...)
		if err != nil || !strings.Contains(string(out), "lladdr "+oldMAC.String()) {
			t.Fatalf("%q before announcing: %s %v", args, out, err)
		}
	}

	var capt *Capturer
	err := c.InNetns(c.Switch(), func() error {
		var err error
		capt, err = Capture(ctx, "br1", CaptureOptions{Filter: func(p gopacket.Packet) bool {
			eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			return ok && (bytes.Equal(eth.SrcMAC, mac) || bytes.Equal(eth.SrcMAC, sentinelMAC))
		}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()

	for _, n := range c.Nodes {
		t.Logf("announcing %s %s %s from %s", mac, v4, v6, n.Name)
		err := c.InNetns(n, func() error {
			if err := Announce(ctx, c.VMBridge, mac, []netip.Addr{v4, v6}, Options{Count: count, Interval: 20 * time.Millisecond}); err != nil {
				return err
			}
			// A last frame behind the announcement marks its end in
			// the capture, so the count below is exact without a
			// timing assumption.
			return Announce(ctx, c.VMBridge, sentinelMAC, []netip.Addr{sentinelIP}, Options{Count: 1, Interval: time.Millisecond})
		})
		if err != nil {
			t.Fatalf("announce from %s: %v", n.Name, err)
		}
		frames := collect(ctx, t, capt, mac, sentinelMAC, count)
		kinds := map[Kind]int{}
		for _, cp := range frames {
			if !cp.KernelTimestamp || cp.Timestamp.IsZero() {
				t.Errorf("frame without kernel timestamp: %+v", cp)
			}
			if cp.Type != PacketBroadcast && cp.Type != PacketMulticast {
				t.Errorf("frame of type %v on br1, want broadcast/multicast", cp.Type)
			}
			a, err := ParseAnnouncement(cp.Data)
			if err != nil {
				t.Errorf("captured frame: %v\n%v", err, cp.Packet)
				continue
			}
			kinds[a.Kind]++
			switch a.Kind {
			case KindARPRequest:
				checkARPFrame(t, cp.Data, mac, v4, layers.ARPRequest)
			case KindARPReply:
				checkARPFrame(t, cp.Data, mac, v4, layers.ARPReply)
			case KindNeighborAdvertisement:
				checkNAFrame(t, cp.Data, mac, v6)
			}
		}
		for _, k := range []Kind{KindARPRequest, KindARPReply, KindNeighborAdvertisement} {
			if kinds[k] != count {
				t.Errorf("from %s: %d frames of kind %v, want %d (all: %v)", n.Name, kinds[k], k, count, kinds)
			}
		}

		// The switch learned the MAC on this host's uplink port
		// (vm<i>, testcluster's naming), i.e. it moved on takeover.
		port := fmt.Sprintf("vm%d", n.Index)
		waitOutput(ctx, t, c, func(out string) bool {
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, mac.String()+" ") {
					return strings.Contains(l, " dev "+port+" ")
				}
			}
			return false
		}, "bridge", "fdb", "show", "br", "br1")
	}

	// The peer's neighbour entries now name the VM's MAC.
	waitOutput(ctx, t, c, func(out string) bool { return strings.Contains(out, "lladdr "+mac.String()) },
		"ip", "neigh", "show", v4.String(), "dev", "br1")
	waitOutput(ctx, t, c, func(out string) bool { return strings.Contains(out, "lladdr "+mac.String()) },
		"ip", "-6", "neigh", "show", v6.String(), "dev", "br1")

	// Cancelling the context ends an announcement early and says so.
	actx, acancel := context.WithCancel(ctx)
	err = c.InNetns(c.Nodes[0], func() error {
		time.AfterFunc(50*time.Millisecond, acancel)
		return Announce(actx, c.VMBridge, mac, []netip.Addr{v4}, Options{Count: 1000, Interval: time.Hour})
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), c.VMBridge) {
		t.Errorf("cancelled Announce = %v, want context.Canceled naming %s", err, c.VMBridge)
	}
	err = c.InNetns(c.Nodes[0], func() error {
		return Announce(actx, c.VMBridge, mac, []netip.Addr{v4}, Options{})
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Announce with a cancelled context = %v", err)
	}
}

// collect reads frames from mac until the sentinel frame arrived and at
// least count frames of every kind are in, or ctx ends.
func collect(ctx context.Context, t *testing.T, c *Capturer, mac, sentinel net.HardwareAddr, count int) []CapturedPacket {
	t.Helper()
	var frames []CapturedPacket
	seenSentinel := false
	kinds := map[Kind]int{}
	for !seenSentinel || kinds[KindARPRequest] < count || kinds[KindARPReply] < count || kinds[KindNeighborAdvertisement] < count {
		select {
		case cp, ok := <-c.Packets():
			if !ok {
				t.Fatalf("capture ended: %v", c.Err())
			}
			eth := cp.Packet.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if bytes.Equal(eth.SrcMAC, sentinel) {
				seenSentinel = true
				continue
			}
			if bytes.Equal(eth.SrcMAC, mac) {
				frames = append(frames, cp)
				if a, err := ParseAnnouncement(cp.Data); err == nil {
					kinds[a.Kind]++
				}
			}
		case <-ctx.Done():
			t.Fatalf("capture incomplete: sentinel %v, kinds %v, stats %+v", seenSentinel, kinds, c.Stats())
		}
	}
	return frames
}

// waitOutput runs argv in the switch namespace until ok accepts its
// output; it fails the test with the last output when ctx ends. The
// kernel applies a received frame asynchronously to its capture, so this
// waits for the effect instead of assuming a delay.
func waitOutput(ctx context.Context, t *testing.T, c *testcluster.Cluster, ok func(string) bool, argv ...string) {
	t.Helper()
	var last string
	for {
		out, err := c.ExecSwitch(ctx, argv...)
		if err == nil && ok(string(out)) {
			return
		}
		last = string(out)
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%q: never as expected; last output:\n%s", argv, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
