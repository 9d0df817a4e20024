package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// Growing a running guest's disk (vm disk resize, issue 18).
//
// An RBD disk is QEMU's own librbd client, which holds the image's lock:
// libvirt's block resize grows the image and the guest sees it at once.
//
// An NBD disk cannot be grown that way: QEMU 7.2 refuses block_resize on
// an NBD node ("Cannot grow NBD nodes"), also after a reconnect, since
// its client keeps the size of its first handshake. What works is a
// second NBD node on the same export (a new connection, which announces
// the new size), the raw format node reopened onto it, then block_resize
// of the format node, which the guest sees as a capacity change; the old
// NBD node is then deleted. libvirt 9.0 has no API for the middle steps,
// so they go through its QEMU monitor passthrough (the domain is then
// marked tainted "custom-monitor"). The options of both nodes are the
// ones DomainXML gives every disk (raw, cache='none', discard='unmap'), so
// nothing else about the disk changes.

// BlockResizeRBD grows the RBD disk of running domain name whose image is
// pool/image to size bytes, through QEMU's librbd.
func (d *Driver) BlockResizeRBD(ctx context.Context, name, pool, image string, size int64) error {
	dom, def, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	disk := findDisk(def, func(s *libvirtxml.DomainDiskSourceNetwork) bool {
		return s.Protocol == "rbd" && s.Name == pool+"/"+image
	})
	if disk == nil || disk.Target == nil {
		return invalid("domain %q has no disk on RBD image %s/%s", name, pool, image)
	}
	if err := call0(ctx, d, func() error {
		return d.lv.DomainBlockResize(dom, disk.Target.Dev, uint64(size), libvirt.DomainBlockResizeBytes)
	}); err != nil {
		return d.opErr("resize the RBD disk "+disk.Target.Dev+" of", name, err)
	}
	d.log.Info("RBD disk grown", "domain", name, "disk", disk.Target.Dev, "image", pool+"/"+image, "size", size)
	return nil
}

// GrowNBDDisk makes running domain name's disk on NBD export export see
// the export's new size, size bytes (the volume has grown already).
func (d *Driver) GrowNBDDisk(ctx context.Context, name, export string, size int64) error {
	dom, def, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	disk := findDisk(def, func(s *libvirtxml.DomainDiskSourceNetwork) bool { return s.Protocol == "nbd" && s.Name == export })
	if disk == nil || disk.Alias == nil || disk.Target == nil {
		return invalid("domain %q has no running disk on NBD export %q", name, export)
	}
	src := disk.Source.Network
	if len(src.Hosts) != 1 || src.Hosts[0].Transport != "unix" || src.Hosts[0].Socket == "" {
		return invalid("disk %s of domain %q is not on a unix NBD socket", disk.Target.Dev, name)
	}
	qmp := func(cmd string, args, out any) error {
		b, err := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
		if err != nil {
			return err
		}
		res, err := call(ctx, d, func() (string, error) { return d.lv.QEMUDomainMonitorCommand(dom, string(b), 0) })
		if err != nil {
			return d.opErr(cmd+" on", name, err)
		}
		var r struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(res), &r); err != nil {
			return fmt.Errorf("compute: %s on domain %q: bad answer %q: %w", cmd, name, res, err)
		}
		if r.Error != nil {
			return fmt.Errorf("compute: %s on domain %q: %s: %s", cmd, name, r.Error.Class, r.Error.Desc)
		}
		if out != nil {
			return json.Unmarshal(r.Return, out)
		}
		return nil
	}
	// The format node of the disk's device, and its NBD child.
	var blocks []struct {
		Qdev     string `json:"qdev"`
		Inserted *struct {
			NodeName string `json:"node-name"`
			File     string `json:"file"`
		} `json:"inserted"`
	}
	if err := qmp("query-block", map[string]any{}, &blocks); err != nil {
		return err
	}
	var format, file string
	for _, b := range blocks {
		if b.Inserted != nil && strings.Contains(b.Qdev, "/"+disk.Alias.Name+"/") {
			format, file = b.Inserted.NodeName, b.Inserted.File
		}
	}
	if format == "" {
		return fmt.Errorf("compute: domain %q: no block device for disk %s (alias %s)", name, disk.Target.Dev, disk.Alias.Name)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		Drv      string `json:"drv"`
		File     string `json:"file"`
	}
	if err := qmp("query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return err
	}
	old := ""
	for _, n := range nodes {
		if n.Drv == "nbd" && n.File == file && n.NodeName != format {
			old = n.NodeName
		}
	}
	cache := map[string]any{"direct": true, "no-flush": false}
	node := "tandem-grow-" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	add := map[string]any{"driver": "nbd", "node-name": node, "export": export,
		"server": map[string]any{"type": "unix", "path": src.Hosts[0].Socket}, "cache": cache, "discard": "unmap"}
	if src.Reconnect != nil && src.Reconnect.Delay != "" {
		if delay, err := strconv.Atoi(src.Reconnect.Delay); err == nil {
			add["reconnect-delay"] = delay
		}
	}
	if err := qmp("blockdev-add", add, nil); err != nil {
		return err
	}
	reopen := map[string]any{"options": []any{map[string]any{"driver": "raw", "node-name": format, "read-only": false,
		"discard": "unmap", "cache": cache, "file": node}}}
	if err := qmp("blockdev-reopen", reopen, nil); err != nil {
		if derr := qmp("blockdev-del", map[string]any{"node-name": node}, nil); derr != nil {
			d.log.Warn("cannot remove the unused NBD node", "domain", name, "node", node, "err", derr)
		}
		return err
	}
	if err := qmp("block_resize", map[string]any{"node-name": format, "size": size}, nil); err != nil {
		return err
	}
	if old != "" {
		if err := qmp("blockdev-del", map[string]any{"node-name": old}, nil); err != nil {
			d.log.Warn("the disk grew, but its old NBD connection stays open", "domain", name, "node", old, "err", err)
		}
	}
	d.log.Info("NBD disk grown", "domain", name, "disk", disk.Target.Dev, "export", export, "size", size, "node", node)
	return nil
}

// liveDef is running domain name and its live definition.
func (d *Driver) liveDef(ctx context.Context, name string) (libvirt.Domain, *libvirtxml.Domain, error) {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return dom, nil, err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return dom, nil, err
	}
	if st != StateRunning && st != StatePaused {
		return dom, nil, invalid("domain %q is %s, not running", name, st)
	}
	x, err := call(ctx, d, func() (string, error) { return d.lv.DomainGetXMLDesc(dom, 0) })
	if err != nil {
		return dom, nil, d.opErr("read the definition of", name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return dom, nil, fmt.Errorf("compute: parse the definition of domain %q: %w", name, err)
	}
	return dom, &def, nil
}

// findDisk is the first network disk of def whose source matches.
func findDisk(def *libvirtxml.Domain, match func(*libvirtxml.DomainDiskSourceNetwork) bool) *libvirtxml.DomainDisk {
	if def.Devices == nil {
		return nil
	}
	for i := range def.Devices.Disks {
		dk := &def.Devices.Disks[i]
		if dk.Source != nil && dk.Source.Network != nil && match(dk.Source.Network) {
			return dk
		}
	}
	return nil
}
