package volume

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/blockstore/rbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/cephholders"
)

// Blocklist entries of old owners (issue 15, docs/design.md §3.6). A
// takeover, or HA's blocklist fencing, records the clients it is about to
// blocklist in the catalog first (recordBlocklist), naming the node whose
// backend IP they carry. That node, and only it, removes them once it
// proved that no process of it can still hold one (sweepBlocklist):
//
//  1. this process has none of them open (it knows its own clients);
//  2. a scan of its processes taken after the entries were committed
//     lists every other process of its network namespace with a Ceph
//     client library mapped (internal/cephholders); the QEMU of a VM none
//     of whose disks was fenced is left out, since it never opened a
//     fenced image;
//  3. every process of that scan has exited.
//
// Then the entries leave Ceph's blocklist and the catalog. Until then a
// stale writer, paused or not, stays fenced; Ceph expires the entries by
// itself after rbd.DefaultBlocklistExpiry in any case.

// unblockScan is the scan removing this node's entries waits on.
type unblockScan struct {
	covers []string // the entries' addresses it was taken for
	procs  []cephholders.Proc
	logged string // the waiting message last logged
}

// recordBlocklist records, before they are blocklisted, clients of volume
// e on its storage. Each is attributed to the member with its IP.
func (m *Manager) recordBlocklist(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry, addrs []string) error {
	sm, err := m.storageMeta()
	if err != nil {
		return err
	}
	now := time.Now()
	add := make([]consensus.BlockedClient, 0, len(addrs))
	for _, a := range addrs {
		add = append(add, consensus.BlockedClient{Addr: a, Node: nodeAt(ms, a), Volume: e.Name, Expires: now.Add(rbd.DefaultBlocklistExpiry)})
	}
	if _, err := sm.Blocklist(ctx, consensus.StorageBlocklistCmd{Storage: e.Storage, Add: add}); err != nil {
		return metaError(err)
	}
	return nil
}

// sweepBlocklist removes this node's blocklist entries once it proved
// their clients gone (see above). ms is a linearizable read.
func (m *Manager) sweepBlocklist(ctx context.Context, ms *consensus.MetaState) {
	self := m.self()
	mine := map[string][]string{} // storage -> addresses
	var addrs []string
	fenced := map[string]bool{} // volumes with an entry of this node
	for _, sn := range sortedKeys(ms.Storage) {
		for _, b := range ms.Storage[sn].Blocklisted {
			if b.Node == self {
				mine[sn] = append(mine[sn], b.Addr)
				addrs = append(addrs, b.Addr)
				fenced[b.Volume] = true
			}
		}
	}
	// The scan state is the sweep's alone (one goroutine); rbdMu guards
	// it and rbdVols only briefly: Ceph calls below may take long.
	m.rbdMu.Lock()
	if len(addrs) == 0 {
		m.rbdScan = nil
		m.rbdMu.Unlock()
		return
	}
	var open []string
	for _, rv := range m.rbdVols {
		if v := rv.vol.Load(); v != nil {
			open = append(open, v.ClientAddr())
		}
	}
	scan := m.rbdScan
	m.rbdMu.Unlock()
	if slices.ContainsFunc(addrs, func(a string) bool { return slices.Contains(open, a) }) {
		return // closed at the next reconcile, when not the owner
	}
	if scan == nil || slices.ContainsFunc(addrs, func(a string) bool { return !slices.Contains(scan.covers, a) }) {
		procs, err := m.holders.Scan()
		if err != nil {
			m.log.Warn("cannot list the processes that may hold this node's blocklisted Ceph clients; their entries stay", "err", err)
			return
		}
		scan = &unblockScan{covers: addrs, procs: procs}
		m.rbdMu.Lock()
		m.rbdScan = scan
		m.rbdMu.Unlock()
	}
	var alive []string
	spared := 0
	for _, p := range scan.procs {
		switch {
		case !m.holders.Alive(p):
		case holdsNone(ms, p, fenced):
			spared++
		default:
			alive = append(alive, p.String())
		}
	}
	if len(alive) > 0 {
		msg := strings.Join(alive, ", ")
		if msg != scan.logged {
			scan.logged = msg
			m.log.Warn("the blocklist entries of this node's old Ceph clients stay until every process that may hold one exits", "entries", addrs, "processes", alive)
		}
		return
	}
	proof := fmt.Sprintf("%s has none of them open; of the %d other process(es) of its network namespace with a Ceph client library at a scan after they were recorded, %d exited and %d are QEMUs of VMs none of whose disks was fenced",
		self, len(scan.procs), len(scan.procs)-spared, spared)
	if len(scan.procs) == 0 {
		proof = fmt.Sprintf("%s has none of them open, and no other process of its network namespace had a Ceph client library at a scan after they were recorded", self)
	}
	for _, sn := range sortedKeys(mine) {
		m.unblocklist(ctx, ms, sn, mine[sn], proof)
	}
}

// unblocklist removes addrs from storage sn's blocklist in Ceph, then
// from the catalog; a failure is retried at the next sweep.
func (m *Manager) unblocklist(ctx context.Context, ms *consensus.MetaState, sn string, addrs []string, proof string) {
	sm, err := m.storageMeta()
	if err != nil {
		return
	}
	cfg, err := m.rbdConfig(ms.Storage[sn], "")
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
		defer cancel()
		var p *rbd.Pool
		if p, err = rbd.Connect(cctx, cfg); err == nil {
			for _, a := range addrs {
				if err = p.BlocklistRemove(cctx, a); err != nil {
					break
				}
			}
			p.Close()
		}
	}
	if err != nil {
		m.log.Warn("cannot remove the blocklist entries of this node's old Ceph clients; retrying at the next sweep (the Ceph user needs mon 'allow command \"osd blocklist\"' to remove entries)", "storage", sn, "entries", addrs, "err", err)
		return
	}
	if _, err := sm.Blocklist(ctx, consensus.StorageBlocklistCmd{Storage: sn, Node: m.self(), Remove: addrs, Proof: proof}); err != nil {
		m.log.Warn("removed blocklist entries from Ceph but not yet from the catalog; retrying", "storage", sn, "entries", addrs, "err", err)
		return
	}
	m.log.Info("blocklist entries of this node's old Ceph clients removed", "storage", sn, "entries", addrs)
}

// holdsNone reports whether p is the QEMU of a VM none of whose disks is
// in fenced: it opened no fenced image, so it holds none of the entries.
// A disk leaves a VM's record only after its QEMU dropped it.
func holdsNone(ms *consensus.MetaState, p cephholders.Proc, fenced map[string]bool) bool {
	if len(p.Cmdline) == 0 || !strings.HasPrefix(filepath.Base(p.Cmdline[0]), "qemu-system") {
		return false
	}
	i := slices.Index(p.Cmdline, "-uuid")
	if i < 0 || i+1 >= len(p.Cmdline) {
		return false
	}
	for _, vm := range ms.VMs {
		if !strings.EqualFold(vm.UUID, p.Cmdline[i+1]) {
			continue
		}
		return !slices.ContainsFunc(vm.Spec.Volumes, func(v string) bool { return fenced[v] })
	}
	return false
}
