// Package compute runs Tandem's virtual machines through libvirt.
//
// Owner: the compute maintainers.
//
// It has two halves:
//
//   - spec.go turns a VMSpec (what the metadata shard stores for a VM) into
//     libvirt domain XML. Every disk is an NBD-over-unix-socket network disk
//     pointing at the local primary's NBD export (docs/design.md §3), so
//     QEMU's own NBD client reaches the volume; there is no kernel NBD here.
//     The only file disk is a VM's cloud-init seed (read-only, serial
//     cidata, after the volumes); CD-ROM drives hold local ISO files.
//   - driver.go manages domain lifecycle (define, start, shutdown, destroy,
//     undefine, state, list) on one node's libvirtd; migrate.go live-migrates.
//   - hostqemu.go finds and kills this host's QEMU processes from /proc,
//     without libvirtd, for a self-fence that must not wait for a hung one.
//
// Domain XML is read and written with libvirt.org/go/libvirtxml, the
// libvirt project's own Go mapping of its schemas (pure Go, no cgo). Tandem
// used to keep hand-written encoding/xml structs for the subset it writes;
// those cannot read back a definition libvirt returns without dropping
// everything outside that subset. Migration needs exactly that: it takes
// the running domain's migratable XML (with the addresses, aliases and
// defaults libvirt filled in), changes only the host-side parts the
// destination needs (NBD sockets, serial log, bridges) and hands the rest
// back untouched, instead of rendering the domain again and hoping that
// libvirt's ABI check sees the same guest.
//
// The driver uses github.com/digitalocean/go-libvirt, which speaks libvirt's
// RPC protocol in pure Go over the daemon's unix socket. That keeps tandemd
// free of cgo and of a libvirt.so ABI dependency, so it cross-compiles and
// links statically, and a hung libvirtd cannot wedge a C thread in-process.
//
// go-libvirt's calls take no context; the Driver runs each blocking call
// under the caller's context (plus a default per-call timeout) and returns
// when the context ends, even if the RPC is still in flight.
//
// Invariants:
//   - every disk of a domain is an NBD network disk on the unix socket of
//     the local node's export: compute never opens a volume itself and uses
//     no kernel NBD device;
//   - no libvirt call outlives its caller: each runs under the caller's
//     context, bounded by the Driver's call timeout (DefaultCallTimeout)
//     when that context has no deadline;
//   - a migration hands libvirt the running domain's own migratable XML with
//     only the host-side parts (NBD sockets, serial log, bridges) changed;
//   - it knows no Raft and no daemon (internal/layers), and needs no cgo.
package compute
