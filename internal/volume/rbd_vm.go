package volume

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore/rbd"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// VMs on RBD (issue 15, docs/design.md §3.6). A VM's RBD disk is opened by
// the VM's QEMU through its own librbd (a libvirt network disk), not by
// tandemd: the owner node in the catalog is the node that runs (or last
// ran) the VM, and its tandemd keeps no client of the image, so the image
// has one watcher, QEMU, and QEMU holds the exclusive lock. The lock moves
// with a live migration by librbd's cooperative hand-over (the target's
// QEMU asks for it at its first write); the catalog's owner follows the
// migration. A takeover (promote, HA) blocklists every other watcher of
// the image, lock owner or not, before it breaks the lock, then commits
// and closes its own client so that the VM's new QEMU can take the lock.

// RBDAccess is how a node's QEMU reaches an RBD image.
type RBDAccess struct {
	Storage string
	Pool    string
	Image   string
	// Monitors are "host:port" each.
	Monitors []string
	// User is the cephx user without "client.".
	User string
	// Key is the cephx key (base64), opened in memory from its sealed copy.
	Key string
}

// VMOf names the VM whose disk volume name is in ms, "" if none.
func VMOf(ms *consensus.MetaState, name string) string {
	for _, n := range sortedKeys(ms.VMs) {
		if slices.Contains(ms.VMs[n].Spec.Volumes, name) {
			return n
		}
	}
	return ""
}

// monitors turns a storage's monitor addresses ("10.0.0.1:6789,
// [v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0]", or bare hosts) into the
// host:port list libvirt takes; v1 (or untyped) addresses are preferred,
// since libvirt passes them to QEMU as mon_host.
func monitors(monHost string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(monHost, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
		f = strings.Trim(f, "[]")
		if strings.HasPrefix(f, "v2:") {
			continue
		}
		f = strings.TrimPrefix(f, "v1:")
		f, _, _ = strings.Cut(f, "/")
		if f == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(f); err != nil {
			f = net.JoinHostPort(f, "6789")
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 { // only v2 addresses: take them, on 3300
		for _, f := range strings.FieldsFunc(monHost, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
			f, _, _ = strings.Cut(strings.TrimPrefix(strings.Trim(f, "[]"), "v2:"), "/")
			if _, _, err := net.SplitHostPort(f); err == nil && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// StorageAccess is how this node reaches storage name's pool: monitors,
// user and the key, opened in memory.
func (m *Manager) StorageAccess(ms *consensus.MetaState, name string) (RBDAccess, error) {
	st, ok := ms.Storage[name]
	if !ok {
		return RBDAccess{}, status.Errorf(codes.FailedPrecondition, "no storage named %q", name)
	}
	cfg, err := m.rbdConfig(st, "")
	if err != nil {
		return RBDAccess{}, err
	}
	mons := monitors(st.MonHost)
	if len(mons) == 0 {
		return RBDAccess{}, status.Errorf(codes.FailedPrecondition, "storage %s: no monitor address in %q", name, st.MonHost)
	}
	return RBDAccess{Storage: name, Pool: cfg.Pool, Monitors: mons, User: strings.TrimPrefix(cfg.Client, "client."), Key: cfg.Key}, nil
}

// AttachRBD readies RBD volume name for a VM's QEMU on this node, which
// must be its owner (a fresh read): this node's own client of the image,
// if any, is closed (its lock released, so QEMU takes it), and the access
// QEMU needs is returned. An image still used on this node's NBD export
// is refused.
func (m *Manager) AttachRBD(ctx context.Context, name string) (RBDAccess, error) {
	ms, e, err := m.freshEntry(ctx, name)
	if err != nil {
		return RBDAccess{}, err
	}
	switch {
	case e.State != consensus.VolumeReady:
		return RBDAccess{}, status.Errorf(codes.FailedPrecondition, "volume %s is %s", name, e.State)
	case e.Owner != m.self():
		return RBDAccess{}, status.Errorf(codes.FailedPrecondition, "node %s is not the owner of RBD volume %s: %s is (epoch %d); a VM on RBD runs only on its disks' owner", m.self(), name, e.Owner, e.Epoch)
	}
	if rv := m.rbdGet(name); rv != nil && rv.attached.Load() > 0 {
		return RBDAccess{}, status.Errorf(codes.FailedPrecondition, "volume %s has %d NBD client(s) on %s; detach them first", name, rv.attached.Load(), m.self())
	}
	if addr := m.closeRBD(name); addr != "" {
		m.log.Info("RBD volume handed to a VM's QEMU: closed this node's client", "volume", name, "client", addr)
	}
	acc, err := m.StorageAccess(ms, e.Storage)
	if err != nil {
		return RBDAccess{}, err
	}
	acc.Pool, acc.Image = e.Pool, e.Image
	return acc, nil
}

// MoveRBDOwner records node to as the owner of RBD volume name, a VM's
// disk whose VM runs nowhere (a start on another node): the old owner
// must answer (then no QEMU of its can be writing: its VM is stopped, and
// it keeps no client of its own); a dead one is taken over with
// blocklisting instead (tandem volume promote, HA). With reason recorded.
func (m *Manager) MoveRBDOwner(ctx context.Context, name, to, reason string) error {
	sm, err := m.storageMeta()
	if err != nil {
		return err
	}
	ms, e, err := m.freshEntry(ctx, name)
	if err != nil {
		return err
	}
	if e.Owner == to {
		return nil
	}
	if rec, ok := ms.Nodes[to]; !ok || rec.State != consensus.NodeMember || rec.Role == "witness" {
		return status.Errorf(codes.InvalidArgument, "node %q is not a data node of this cluster; it cannot own %s", to, name)
	}
	if e.Owner != "" {
		if err := m.onNode(ctx, ms, e.Owner, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: name})
			return err
		}); err != nil && status.Code(err) != codes.NotFound {
			return status.Errorf(codes.FailedPrecondition, "the owner %s of RBD volume %s does not answer (%s); if it is down, take it over with 'tandem volume promote %s %s' (blocklists its clients first)", e.Owner, name, grpcMessage(err), name, to)
		}
	}
	if _, err := sm.UpdateRBDVolume(ctx, consensus.VolumeRBDCmd{Name: name, Owner: to, Epoch: e.Epoch, Reason: reason}); err != nil {
		return metaError(err)
	}
	m.log.Info("RBD volume owner moved", "volume", name, "from", e.Owner, "to", to, "reason", reason)
	return nil
}

// vmDiskNote is what show says of an RBD volume a VM's QEMU opens.
func vmDiskNote(vm string) string {
	return fmt.Sprintf("disk of VM %s: its QEMU opens the image (librbd), not the NBD export", vm)
}

// FenceRBD blocklists in Ceph every client of node (by its backend
// address) that has one of vols' images open or holds its lock, and
// returns their addresses; each entry is in the OSD map this client
// waited for, so the monitors confirmed it (HA's blocklist fencing,
// ha.rbd_blocklist_is_fence). An image node has no client of is fine:
// nothing of it can write there (a client that reconnects gets a new
// address, and asks the lock of an owner that took it over by
// blocklisting, see TakeoverAll).
func (m *Manager) FenceRBD(ctx context.Context, ms *consensus.MetaState, node string, vols []string) ([]string, error) {
	var out []string
	for _, name := range vols {
		e, ok := ms.Volumes[name]
		if !ok || !e.IsRBD() {
			return out, fmt.Errorf("volume %s is not an RBD volume", name)
		}
		cfg, err := m.entryConfig(ms, e)
		if err != nil {
			return out, err
		}
		cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
		p, err := rbd.Connect(cctx, cfg)
		if err != nil {
			cancel()
			return out, cephError("storage "+e.Storage, err)
		}
		info, err := p.Stat(cctx, e.Image)
		if err == nil {
			addrs := []string{}
			for _, w := range info.Watchers {
				addrs = append(addrs, w.Addr)
			}
			for _, l := range info.LockOwners {
				addrs = append(addrs, l.Addr)
			}
			var mine []string
			for _, a := range addrs {
				if nodeAt(ms, a) == node && !slices.Contains(out, a) && !slices.Contains(mine, a) {
					mine = append(mine, a)
				}
			}
			// Recorded first, so that no entry is unknown to the catalog.
			if len(mine) > 0 {
				err = m.recordBlocklist(cctx, ms, e, mine)
			}
			for _, a := range mine {
				if err != nil {
					break
				}
				if err = p.BlocklistAdd(cctx, a, rbd.DefaultBlocklistExpiry); err == nil {
					out = append(out, a)
				}
			}
		}
		p.Close()
		cancel()
		if err != nil {
			return out, cephError(fmt.Sprintf("blocklist the clients of %s on %s/%s", node, e.Pool, e.Image), err)
		}
	}
	return out, nil
}
