// Command tandem-guest-agent is /init of the Tandem test guest (see package
// internal/guest). It mounts /proc, /sys and /dev, loads the virtio modules
// listed in /etc/tandem-modules, configures eth0, then forever bumps a
// durable counter on its disk and sends heartbeat datagrams to the host.
// It answers each line read on the serial port (ttyS0) with "echo: LINE"
// (echo.go), for the interactive console's tests.
// It also answers a minimal subset of the QEMU guest agent protocol on the
// org.qemu.guest_agent.0 virtio-serial port (qga.go): sync, ping, info,
// network interfaces, shutdown (powers off) and fsfreeze (nothing to
// freeze in an initramfs: zero file systems).
// With tandem.cidata it reads the user-data of its cloud-init NoCloud seed
// from the raw device (cidata.go: no isofs in the guest kernel) and reports
// its "tandem_test_value:" line in every heartbeat.
//
// Owner: the test-infrastructure maintainers.
//
// It is PID 1: returning or panicking panics the kernel, so every error is
// printed to the console and retried.
//
// Kernel command line (read from /proc/cmdline):
//
//	tandem.ip=10.0.2.15/24     address of eth0 (required for datagrams)
//	tandem.gw=10.0.2.2         default gateway (optional)
//	tandem.udp=10.0.2.2:9999   receiver of the heartbeat datagrams
//	tandem.rate=100            datagrams per second
//	tandem.disk=/dev/vda       counter disk (optional)
//	tandem.write_ms=10         pause between two counter writes
//	tandem.iface=eth0          interface to configure
//	tandem.qga=off             leave the guest agent port unanswered
//	tandem.cidata=/dev/vdb     cloud-init seed device ("auto": find it)
//
// Invariants: it never returns (it is PID 1); every error is printed to the
// console and retried; and a counter goes into a datagram only after the
// O_DIRECT|O_SYNC write that stored it returned (internal/guest).
package main
