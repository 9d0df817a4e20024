// Package netdelay delays packets by a fixed time in userspace: iptables
// sends a network namespace's packets to an NFQUEUE queue, and a Delayer
// bound to that queue holds each one for the delay, then accepts it. It is
// the chaos runner's "delay" network fault (issue 16).
//
// Owner: the test-infrastructure maintainers.
//
// # Why NFQUEUE, and why this dependency
//
// The test kernel has no netem (tc's delay), and nftables has no `queue`
// expression there (CONFIG_NFT_QUEUE is not set), but the xtables NFQUEUE
// target is built in and reached through nft's compat layer, so
// `iptables -j NFQUEUE --queue-num N` (iptables-nft) works inside a node's
// namespace. A TCP proxy was the other option; it would have to sit on
// every backend connection (Raft, peer gRPC, replication), which tandemd
// dials at its peers' own addresses, so it would need address rewriting
// and would change what a connection loss looks like. NFQUEUE delays the
// real packets on the real paths, whatever the protocol.
//
// The queue is spoken to over netfilter netlink with
// github.com/florianl/go-nfqueue/v2 (and its github.com/mdlayher/netlink):
// a maintained, widely used implementation of the nfnetlink_queue protocol
// (binding, copy modes, verdicts, namespaces through netlink.Config.NetNS),
// which would otherwise be a few hundred lines of hand-written netlink
// message packing here. Only tests use this package; the shipped commands
// never depend on it (internal/layers).
//
// # Use
//
// Start a Delayer for a queue number in the target namespace first, then
// add the rules (Rules gives the iptables argv lists, to run inside that
// namespace); to heal, Release (held and new packets go at once, still in
// order, so that once the rules are gone a packet that bypasses the queue
// can overtake only one whose verdict is in flight, not one held for the
// delay), delete the rules, then Close. A packet queued with no Delayer
// bound is dropped by the kernel, so the order matters.
//
// Invariants: until Release, every packet a Delayer receives is accepted
// no earlier than Delay after it was read from the queue (the delay is a
// floor: reading and scheduling only add to it); packets are accepted in
// the order they were queued (one FIFO, one delay per Delayer), so a TCP
// flow is not reordered by it; after Release, and in Close, they are
// accepted at once, still in order. A packet that finds the queue full
// (MaxQueue) is dropped by the kernel, as a congested link would drop it.
package netdelay
