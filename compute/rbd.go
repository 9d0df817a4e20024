package compute

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// RBDDisk is a disk QEMU opens itself through librbd (issue 15): a
// libvirt network disk protocol='rbd' with cephx through a libvirt secret
// of type ceph (DefineCephSecret). QEMU's client is then the image's only
// writer on the node; cache='none' turns librbd's cache off.
type RBDDisk struct {
	Pool  string
	Image string
	// Hosts are the monitors, "host:port" each.
	Hosts []string
	// User is the cephx user without "client." ("tandem").
	User string
	// SecretUUID names the libvirt secret holding User's key.
	SecretUUID string
}

// validate checks the fields QEMU and libvirt take as they are.
func (r *RBDDisk) validate() error {
	for what, s := range map[string]string{"pool": r.Pool, "image": r.Image, "user": r.User} {
		if s == "" || strings.ContainsAny(s, "/@:= \t\n\"'<>&") {
			return fmt.Errorf("rbd %s %q is empty or has a reserved character", what, s)
		}
	}
	if len(r.Hosts) == 0 {
		return fmt.Errorf("rbd image %s/%s: no monitor", r.Pool, r.Image)
	}
	for _, h := range r.Hosts {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return fmt.Errorf("rbd monitor %q: %w", h, err)
		}
	}
	if !uuidRE.MatchString(r.SecretUUID) {
		return fmt.Errorf("rbd secret uuid %q is not a UUID", r.SecretUUID)
	}
	return nil
}

// rbdSource is the libvirt source of an RBD disk.
func rbdSource(r *RBDDisk) *libvirtxml.DomainDiskSource {
	src := &libvirtxml.DomainDiskSourceNetwork{
		Protocol: "rbd",
		Name:     r.Pool + "/" + r.Image,
		Auth: &libvirtxml.DomainDiskAuth{Username: r.User,
			Secret: &libvirtxml.DomainDiskSecret{Type: "ceph", UUID: r.SecretUUID}},
	}
	for _, h := range r.Hosts {
		host, port, _ := net.SplitHostPort(h)
		src.Hosts = append(src.Hosts, libvirtxml.DomainDiskSourceHost{Name: host, Port: port})
	}
	return &libvirtxml.DomainDiskSource{Network: src}
}

// rbdOf parses an RBD network disk back; nil when disk is not one.
func rbdOf(disk libvirtxml.DomainDisk) *RBDDisk {
	if disk.Source == nil || disk.Source.Network == nil || disk.Source.Network.Protocol != "rbd" {
		return nil
	}
	n := disk.Source.Network
	r := &RBDDisk{}
	r.Pool, r.Image, _ = strings.Cut(n.Name, "/")
	for _, h := range n.Hosts {
		r.Hosts = append(r.Hosts, net.JoinHostPort(h.Name, h.Port))
	}
	if a := n.Auth; a != nil {
		r.User = a.Username
		if a.Secret != nil {
			r.SecretUUID = a.Secret.UUID
		}
	}
	return r
}

// CephSecretUUID is the UUID of the libvirt secret that holds storage's
// key on a node: derived from the storage's name, so every node and a
// migration's both ends name the same secret.
func CephSecretUUID(storage string) string {
	s := sha256.Sum256([]byte("tandem ceph secret\x00" + storage))
	s[6] = s[6]&0x0f | 0x50 // version 5 style (name-based)
	s[8] = s[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// DefineCephSecret defines (or redefines) the libvirt secret uuid of type
// ceph with key (the cephx key as Ceph prints it, base64). The secret is
// ephemeral and private: libvirtd keeps it in memory only, never on disk,
// and does not hand its value back through the API.
func (d *Driver) DefineCephSecret(ctx context.Context, uuid, usage, key string) error {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil {
		return fmt.Errorf("compute: ceph secret %s: the key is not base64: %w", usage, err)
	}
	x, err := (&libvirtxml.Secret{Ephemeral: "yes", Private: "yes", UUID: uuid, Description: "tandem: cephx key of " + usage,
		Usage: &libvirtxml.SecretUsage{Type: "ceph", Name: "tandem " + usage}}).Marshal()
	if err != nil {
		return fmt.Errorf("compute: ceph secret xml: %w", err)
	}
	sec, err := call(ctx, d, func() (libvirt.Secret, error) { return d.lv.SecretDefineXML(x, 0) })
	if err != nil {
		return fmt.Errorf("compute: define ceph secret %s: %w", usage, err)
	}
	// libvirt's secret value for ceph is the raw key; it base64-encodes
	// it again for QEMU.
	if err := call0(ctx, d, func() error { return d.lv.SecretSetValue(sec, raw, 0) }); err != nil {
		return fmt.Errorf("compute: set ceph secret %s: %w", usage, err)
	}
	return nil
}

// UndefineSecret removes the libvirt secret uuid; one that does not
// exist is not an error.
func (d *Driver) UndefineSecret(ctx context.Context, uuid string) error {
	var u libvirt.UUID
	raw := strings.ReplaceAll(uuid, "-", "")
	if len(raw) != 32 {
		return fmt.Errorf("compute: secret uuid %q", uuid)
	}
	for i := range u {
		if _, err := fmt.Sscanf(raw[2*i:2*i+2], "%02x", &u[i]); err != nil {
			return fmt.Errorf("compute: secret uuid %q: %w", uuid, err)
		}
	}
	sec, err := call(ctx, d, func() (libvirt.Secret, error) { return d.lv.SecretLookupByUUID(u) })
	if err != nil {
		if noSecret(err) {
			return nil
		}
		return fmt.Errorf("compute: look up secret %s: %w", uuid, err)
	}
	if err := call0(ctx, d, func() error { return d.lv.SecretUndefine(sec) }); err != nil && !noSecret(err) {
		return fmt.Errorf("compute: undefine secret %s: %w", uuid, err)
	}
	return nil
}

// Secrets lists the UUIDs of the secrets libvirtd holds.
func (d *Driver) Secrets(ctx context.Context) ([]string, error) {
	secs, err := call(ctx, d, func() ([]libvirt.Secret, error) {
		s, _, err := d.lv.ConnectListAllSecrets(1, 0)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("compute: list secrets: %w", err)
	}
	out := make([]string, 0, len(secs))
	for _, s := range secs {
		out = append(out, formatUUID(s.UUID))
	}
	return out, nil
}

// noSecret reports libvirt's VIR_ERR_NO_SECRET.
func noSecret(err error) bool {
	var e libvirt.Error
	return errors.As(err, &e) && e.Code == uint32(libvirt.ErrNoSecret)
}
