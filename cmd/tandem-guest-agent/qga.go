package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// qgaChannel is the virtio-serial port qemu-guest-agent listens on.
const qgaChannel = "org.qemu.guest_agent.0"

// qgaState is what the minimal guest agent keeps between commands.
type qgaState struct {
	frozen atomic.Bool
}

// qgaPort finds the agent's virtio-serial port: udev's symlink when there
// is one, else the /dev/vportNpM whose sysfs name is the channel's
// (devtmpfs makes the node, nothing makes the symlink here).
func qgaPort() (string, error) {
	if _, err := os.Stat("/dev/virtio-ports/" + qgaChannel); err == nil {
		return "/dev/virtio-ports/" + qgaChannel, nil
	}
	names, _ := filepath.Glob("/sys/class/virtio-ports/vport*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == qgaChannel {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", errors.New("no virtio-serial port named " + qgaChannel)
}

// qga answers a minimal subset of the QEMU guest agent protocol on its
// virtio-serial port, enough for Tandem's host side: guest-sync,
// guest-sync-delimited, guest-ping, guest-info,
// guest-network-get-interfaces, guest-get-disks, guest-shutdown and
// guest-fsfreeze-*.
func (a *agent) qga(ctx context.Context) error {
	var path string
	for {
		p, err := qgaPort()
		if err == nil {
			path = p
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	a.log.Info("guest agent channel open", "port", path)
	st := &qgaState{}
	var pending []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if n == 0 || errors.Is(err, io.EOF) {
			// The host end is not connected: read returns 0 at once.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := bytes.Trim(pending[:i], "\xff \r\t")
			pending = pending[i+1:]
			if len(line) == 0 {
				continue
			}
			out := a.qgaCommand(ctx, st, line)
			if out == nil {
				continue
			}
			if _, err := f.Write(out); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
		}
	}
}

// qgaCommand is the answer to one command line (nil for none).
func (a *agent) qgaCommand(ctx context.Context, st *qgaState, line []byte) []byte {
	var req struct {
		Execute   string                     `json:"execute"`
		Arguments map[string]json.RawMessage `json:"arguments"`
	}
	reply := func(v any) []byte {
		b, err := json.Marshal(map[string]any{"return": v})
		if err != nil {
			return qgaError("GenericError", err.Error())
		}
		return append(b, '\n')
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return qgaError("GenericError", "invalid JSON: "+err.Error())
	}
	switch req.Execute {
	case "guest-sync":
		return reply(req.Arguments["id"])
	case "guest-sync-delimited":
		return append([]byte{0xFF}, reply(req.Arguments["id"])...)
	case "guest-ping":
		return reply(struct{}{})
	case "guest-info":
		cmds := []map[string]any{}
		for _, c := range []string{"guest-sync", "guest-sync-delimited", "guest-ping", "guest-info", "guest-network-get-interfaces",
			"guest-get-disks", "guest-shutdown", "guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"} {
			cmds = append(cmds, map[string]any{"name": c, "enabled": true, "success-response": c != "guest-shutdown"})
		}
		return reply(map[string]any{"version": "tandem-test-guest", "supported_commands": cmds})
	case "guest-network-get-interfaces":
		ifs, err := qgaInterfaces()
		if err != nil {
			return qgaError("GenericError", err.Error())
		}
		return reply(ifs)
	case "guest-get-disks":
		disks, err := qgaDisks("/sys/block")
		if err != nil {
			return qgaError("GenericError", err.Error())
		}
		return reply(disks)
	case "guest-fsfreeze-status":
		if st.frozen.Load() {
			return reply("frozen")
		}
		return reply("thawed")
	case "guest-fsfreeze-freeze":
		// The initramfs has no file system that freezes: zero frozen.
		if !st.frozen.CompareAndSwap(false, true) {
			return qgaError("GenericError", "the agent is already in frozen state")
		}
		return reply(0)
	case "guest-fsfreeze-thaw":
		st.frozen.Store(false)
		return reply(0)
	case "guest-shutdown":
		// Like qemu-guest-agent: no answer; the guest powers off.
		a.log.InfoContext(ctx, "guest agent: guest-shutdown; powering off")
		go func() {
			unix.Sync()
			time.Sleep(100 * time.Millisecond) // let the log line out
			if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
				a.log.Error("power off", "err", err)
			}
		}()
		return nil
	}
	return qgaError("CommandNotFound", fmt.Sprintf("The command %s has not been found", req.Execute))
}

func qgaError(class, desc string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"class": class, "desc": desc}})
	return append(b, '\n')
}

// qgaInterface is one entry of guest-network-get-interfaces.
type qgaInterface struct {
	Name string  `json:"name"`
	MAC  string  `json:"hardware-address,omitempty"`
	IPs  []qgaIP `json:"ip-addresses"`
}

type qgaIP struct {
	Type   string `json:"ip-address-type"`
	Addr   string `json:"ip-address"`
	Prefix int    `json:"prefix"`
}

func qgaInterfaces() ([]qgaInterface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]qgaInterface, 0, len(ifs))
	for _, ifc := range ifs {
		qi := qgaInterface{Name: ifc.Name, MAC: ifc.HardwareAddr.String(), IPs: []qgaIP{}}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			typ := "ipv6"
			if ipn.IP.To4() != nil {
				typ = "ipv4"
			}
			qi.IPs = append(qi.IPs, qgaIP{Type: typ, Addr: ipn.IP.String(), Prefix: ones})
		}
		out = append(out, qi)
	}
	return out, nil
}

// qgaDisk is one entry of guest-get-disks. Size is the test guest's own
// addition (the kernel's view, /sys/block/DEV/size x 512), so a test sees
// which disk a hot-plug brought.
type qgaDisk struct {
	Name         string   `json:"name"`
	Partition    bool     `json:"partition"`
	Dependencies []string `json:"dependencies"`
	Size         uint64   `json:"size"`
}

// qgaDisks lists the virtio disks the kernel has under sysfs (dir is
// /sys/block), sorted by name.
func qgaDisks(dir string) ([]qgaDisk, error) {
	names, err := filepath.Glob(filepath.Join(dir, "vd*"))
	if err != nil {
		return nil, err
	}
	out := []qgaDisk{}
	for _, p := range names {
		b, err := os.ReadFile(filepath.Join(p, "size"))
		if err != nil {
			continue // going away
		}
		sectors, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/size: %w", p, err)
		}
		out = append(out, qgaDisk{Name: "/dev/" + filepath.Base(p), Dependencies: []string{}, Size: sectors * 512})
	}
	return out, nil
}
