// Package netannounce tells an L2 network that a VM's addresses now live
// behind another host ("address takeover"), and captures frames with
// kernel receive timestamps to observe that and other traffic.
//
// Owner: the HA maintainers.
//
// # Why announce
//
// When HA restarts a VM on another node after a failure, the VM keeps its
// MAC and IP addresses, but the network still points at the dead node:
// switches have the MAC in their forwarding table on the old port, and
// peers (routers, other VMs, the load balancer in front) may hold a
// neighbour entry for the IP. Switches would only relearn when the guest
// itself transmits, which is many seconds after QEMU starts (the guest has
// to boot first), and a peer whose ARP entry names another MAC (after an
// address moved between NICs) keeps sending to it until the entry expires.
// Announce fixes both at once, on behalf of the VM, right after tandemd
// starts its QEMU: it broadcasts frames whose Ethernet source is the VM's
// MAC (so every switch on the path moves the MAC to the new node's port)
// and whose payload maps each declared IP to that MAC (so peers that
// already have an entry update it). This is what Heartbeat's IPaddr and
// IPaddr2 resources do with send_arp when they take over an address, and
// what QEMU does with RARP after a live migration; a restart after a crash
// has no migration, so nobody else would announce.
//
// The Heartbeat/Xen thesis whose outage measurements bench/ reproduces
// measured live migration only and lists "the impact on outages ... caused
// by ARP updates" and the cost of updating the switch's tables as open
// questions: "when a virtual machine is migrated to another physical node,
// it is reasonable to believe that the ARP table must be updated before
// successfully transmitting the first package to the virtual machine on the
// 'new' physical node". It names no count or interval; those below come
// from Heartbeat's own resource agents.
//
// # What is sent
//
// For each IPv4 address, per round, two gratuitous ARPs, both broadcast
// (ff:ff:ff:ff:ff:ff) with Ethernet source = the VM's MAC, sender hardware
// address = the VM's MAC and sender IP = target IP = the address:
//
//   - an ARP request with target hardware address 00:00:00:00:00:00 (an
//     "ARP Announcement", RFC 5227 §2.3), then, half an interval later,
//   - an ARP reply with target hardware address = the VM's MAC.
//
// Heartbeat's send_arp sends exactly this pair per repeat, "because some
// systems ignore one or the other, and this combination gives the greatest
// chance of success", sleeping half the interval between the two. Linux
// updates an existing neighbour entry from either form immediately (both
// count as gratuitous there, which overrides the entry's locktime; the
// reply form only when target = sender hardware address, as here) and, with
// the default arp_accept=0, creates no new entries: a peer that never
// talked to the VM needs none. One difference from send_arp: it uses the
// sending NIC's MAC as Ethernet source, because there the address moves to
// the host's NIC. Here the address belongs to the VM, so the VM's MAC is
// both the Ethernet source (what switches learn) and the ARP sender.
//
// For each IPv6 address, per round, one unsolicited Neighbor Advertisement
// (RFC 4861 §7.2.6): ICMPv6 type 136 code 0, Override set, Solicited and
// Router clear, target = the address, a Target Link-Layer Address option
// with the VM's MAC, to the all-nodes group ff02::1 (Ethernet
// 33:33:00:00:00:01), hop limit 255 (receivers drop NDP with any other
// value, §7.1.2), and a checksum over the IPv6 pseudo-header computed by
// gopacket (SetNetworkLayerForChecksum). The IPv6 source is the address
// itself: §4.4 asks for "an address assigned to the interface from which
// the advertisement is sent", which for the VM's interface is the announced
// address (the host has no address of the guest's to use, and the guest's
// link-local is not known to tandemd), and Linux's own unsolicited NAs
// (ndisc_send_unsol_na) use the target address as source too. Linux
// accepts an NA from any unicast source; with Override set it replaces the
// link-layer address of an existing entry and marks it STALE, so the next
// packet is sent to the new MAC and confirmed by NUD. Router is clear
// because tandem's VMs are announced as hosts; an NA with R=0 also clears
// a peer's IsRouter flag for the address.
//
// Frames are untagged; announcing into a VLAN means passing the VLAN
// interface (or a VLAN-aware bridge's port configuration does the tagging).
//
// # Count and interval
//
// Options.Count rounds, Options.Interval apart, defaults 5 and 200 ms:
// IPaddr2's arp_count and arp_interval defaults (legacy IPaddr used 10 at
// 500 ms, in the background). The first round is what updates the network;
// repeats only cover a lost frame or a port that was not yet forwarding
// when the first one went out (a fresh tap or a switch port briefly in STP
// learning), so a handful spread over a second is enough. QEMU's
// self-announce after a live migration has the same shape (by default 5
// rounds, the first 50 ms after the switch-over, each gap 100 ms longer
// than the one before). With the defaults Announce returns after 0.9 s;
// callers that must not wait run it in a goroutine and cancel its context
// when the VM stops.
//
// # Sending and capturing
//
// Both directions use AF_PACKET sockets through golang.org/x/sys/unix:
// gopacket builds and decodes the frames, but its afpacket package (in
// v1.1.19) and pcap need cgo, which the daemon is built without. Announce
// sends with sendto on a socket bound to no protocol, so it never receives
// anything. Capture binds an ETH_P_ALL socket to one interface, asks for
// SO_TIMESTAMPNS so every frame carries the kernel's receive time (what
// tcpdump records, and what the failover benchmark needs to time the
// guest's first datagram after a restart without user-space scheduling
// noise), and reads through the Go netpoller so a cancelled context ends
// it promptly. ParseAnnouncement decodes and validates an announcement
// frame the way a Linux receiver would (FuzzParseAnnouncement fuzzes it);
// tests use it on captured frames, and the failover benchmark can use it
// to timestamp when the announcement reached the switch.
//
// Sending and capturing need CAP_NET_RAW. Both act in the network
// namespace of the calling thread at the time of the call.
//
// # Invariants
//
//   - Announce sends only announcements (gratuitous ARP, unsolicited NA)
//     whose Ethernet source and link-layer address are the VM's MAC, for the
//     addresses it was given, and never receives: its socket is bound to no
//     protocol;
//   - everything goes through AF_PACKET sockets, without cgo, in the network
//     namespace of the calling thread; it knows no Raft and no daemon
//     (internal/layers).
package netannounce
