// Package guest is the test guest shared by the guest agent (the initramfs's
// /init, in cmd/tandem-guest-agent) and the host-side tests: the wire format
// of the agent's heartbeat datagrams, the on-disk counter block, the outage
// Receiver, and EnsureImage, which builds the kernel and initramfs.
//
// Owner: the test-infrastructure maintainers.
//
// The agent proves two things a VM test wants to know. Liveness: it sends a
// datagram at a fixed rate, so an interruption (a migration's downtime, a
// failover) shows as a gap in the stream. Durability: it bumps a counter in
// block 0 of its disk with O_DIRECT|O_SYNC and only reports a value in a
// datagram after the write returned, so the disk must hold at least every
// counter the host has seen acknowledged.
//
// Invariants: the agent puts a counter in a datagram only after the
// O_DIRECT|O_SYNC write that stored it returned, so the disk holds at least
// every counter the host saw acknowledged; datagrams and the counter block
// carry a magic and a CRC32, and whatever does not decode (a fresh disk
// included) is ErrMalformed, never taken for data. The optional trailers,
// disk size (DiskBytes) then cloud-init value (CloudInit), each carry their
// own tag and CRC32, so a datagram without them is byte for byte the
// 44-byte layout older receivers decode.
//
// ReadISOFile and ISOLabel (iso.go) let the agent read its cloud-init seed
// from the raw device: the guest kernel has no isofs module.
package guest
