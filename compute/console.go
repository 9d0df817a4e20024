package compute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// Consoles (issue 18). Every domain gets a VGA video device and a VNC
// display QEMU serves on 127.0.0.1 only, on a port libvirt allocates
// (autoport, so a migrated domain gets a free one on its new host); the
// daemon reads the port from the live definition (Driver.Consoles) and is
// the only way in from another machine (its authenticated API).
//
// The serial port is a unix socket QEMU listens on (SerialSocket, next to
// the log) with the log kept as libvirt's chardev log: interactive sessions
// connect to the socket while everything the guest writes still goes to the
// log, whether anyone is connected or not. A socket rather than a pty: a
// per-host libvirtd's pty lives in its own /dev, which tandemd may not see;
// a socket has no line discipline to configure, QEMU serves one client at a
// time, and a client going away is an EOF on both sides.

// maxUnixPath is the longest unix socket path (sun_path less its NUL).
const maxUnixPath = 107

// VNCListen is the only address a VNC display listens on.
const VNCListen = "127.0.0.1"

// VideoModel is the video device of every domain: std VGA renders under
// TCG with SeaBIOS (text mode) and OVMF (its GOP driver) alike.
const VideoModel = "vga"

// ErrNoConsole is wrapped by Consoles when the running domain lacks the
// console asked for (defined before consoles existed, or a serial log path
// too long for a socket).
var ErrNoConsole = errors.New("no such console")

// SerialSocket is the unix socket of the serial port logged to log.
func SerialSocket(log string) string { return strings.TrimSuffix(log, ".log") + ".sock" }

// serialPort is the serial port's source and log: QEMU listening on
// SerialSocket(log) and logging to log; a file when the socket's path would
// be too long (log only, no interactive console); a pty without a log.
func serialPort(log string) (*libvirtxml.DomainChardevSource, *libvirtxml.DomainChardevLog) {
	if log == "" || len(SerialSocket(log)) > maxUnixPath {
		return consoleSource(log), nil
	}
	return &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: SerialSocket(log)}},
		// append: a restarted VM keeps the earlier boots' output.
		&libvirtxml.DomainChardevLog{File: log, Append: "on"}
}

// serialDevices are the serial port and the console on it.
func serialDevices(log string) ([]libvirtxml.DomainSerial, []libvirtxml.DomainConsole) {
	port := uint(0)
	src, lg := serialPort(log)
	csrc, clg := serialPort(log)
	return []libvirtxml.DomainSerial{{Source: src, Log: lg, Target: &libvirtxml.DomainSerialTarget{Port: &port}}},
		[]libvirtxml.DomainConsole{{Source: csrc, Log: clg, Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port}}}
}

// serialLogOf is the log path of a serial port as serialPort made it.
func serialLogOf(src *libvirtxml.DomainChardevSource, lg *libvirtxml.DomainChardevLog) string {
	switch {
	case lg != nil && lg.File != "":
		return lg.File
	case src != nil && src.File != nil:
		return src.File.Path
	}
	return ""
}

// displayDevices are the VNC display and its video device.
func displayDevices() ([]libvirtxml.DomainGraphic, []libvirtxml.DomainVideo) {
	return []libvirtxml.DomainGraphic{{VNC: &libvirtxml.DomainGraphicVNC{AutoPort: "yes", Listen: VNCListen,
			Listeners: []libvirtxml.DomainGraphicListener{{Address: &libvirtxml.DomainGraphicListenerAddress{Address: VNCListen}}}}}},
		[]libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: VideoModel, Primary: "yes"}}}
}

// ConsoleEndpoints are where a running domain's consoles are reached on
// this host.
type ConsoleEndpoints struct {
	// VNC is host:port of the VNC display, "" for none.
	VNC string
	// Serial is the serial port's unix socket, "" for none.
	Serial string
}

// Consoles returns where the running domain name's consoles are; a domain
// that is not running (or paused) is an error naming its state.
func (d *Driver) Consoles(ctx context.Context, name string) (ConsoleEndpoints, error) {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return ConsoleEndpoints{}, err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return ConsoleEndpoints{}, d.opErr("state of", name, err)
	}
	if st != StateRunning && st != StatePaused && st != StateBlocked {
		return ConsoleEndpoints{}, fmt.Errorf("compute: domain %q is %s: %w", name, st, ErrNotRunning)
	}
	x, err := call(ctx, d, func() (string, error) { return d.lv.DomainGetXMLDesc(dom, 0) })
	if err != nil {
		return ConsoleEndpoints{}, d.opErr("read the definition of", name, err)
	}
	return consoleEndpoints(x)
}

// ErrNotRunning is wrapped by Consoles for a domain that does not run.
var ErrNotRunning = errors.New("domain is not running")

// consoleEndpoints reads the consoles of a live domain definition.
func consoleEndpoints(x string) (ConsoleEndpoints, error) {
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return ConsoleEndpoints{}, fmt.Errorf("compute: parse domain xml: %w", err)
	}
	var out ConsoleEndpoints
	if def.Devices == nil {
		return out, nil
	}
	for _, g := range def.Devices.Graphics {
		if v := g.VNC; v != nil && v.Port > 0 && out.VNC == "" {
			host := v.Listen
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = VNCListen
			}
			out.VNC = net.JoinHostPort(host, strconv.Itoa(v.Port))
		}
	}
	for _, s := range def.Devices.Serials {
		if s.Source != nil && s.Source.UNIX != nil && s.Source.UNIX.Mode == "bind" && out.Serial == "" {
			out.Serial = s.Source.UNIX.Path
		}
	}
	return out, nil
}
