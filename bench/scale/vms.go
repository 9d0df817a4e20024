package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// VM settings of the mass restart: small TCG guests (the test guest of
// internal/guest, writing its disk counter), each on its own 2-replica
// disk, with distinct priorities so the restart order is defined.
const (
	vmMemoryMiB = 128
	// vmCapacityMiB is what every node offers VMs: the lost node's VMs
	// must fit on the survivors (admission control checks it).
	vmCapacityMiB = 4096
	vmDiskBytes   = 16 << 20
)

func vmName(i int) string { return fmt.Sprintf("scale-vm%02d", i) }

// startCompute starts n's libvirtd, then its tandemd wired to it.
func (b *bench) startCompute(ctx context.Context, n *testcluster.Node, args []string) (*testcluster.Proc, error) {
	lv, err := b.c.StartLibvirtd(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("libvirtd on %s: %w", n.Name, err)
	}
	return b.td.StartComputeDaemon(ctx, n, lv, vmCapacityMiB, args...)
}

// victimNode is the node primary of the most volumes: the one the
// failover kills.
func (b *bench) victimNode(ctx context.Context) (*testcluster.Node, int, error) {
	cl, err := b.client(ctx, b.c.Nodes[0])
	if err != nil {
		return nil, 0, err
	}
	lr, err := cl.Volume.List(ctx, &tandemv1.ListVolumesRequest{})
	if err != nil {
		return nil, 0, err
	}
	byPrimary := map[string]int{}
	for _, v := range lr.GetVolumes() {
		byPrimary[v.GetPrimary()]++
	}
	victim := b.c.Nodes[0]
	for _, n := range b.c.Nodes {
		if byPrimary[n.Name] > byPrimary[victim.Name] {
			victim = n
		}
	}
	return victim, byPrimary[victim.Name], nil
}

// startVMs creates cfg.vms VMs on the node the failover will kill and
// waits until each runs there.
func (b *bench) startVMs(ctx context.Context) error {
	victim, _, err := b.victimNode(ctx)
	if err != nil {
		return err
	}
	b.victim = victim
	cl, err := b.client(ctx, victim)
	if err != nil {
		return err
	}
	cmdline := b.img.Cmdline(guest.Config{Disk: "/dev/vda"})
	start := time.Now()
	for i := range b.cfg.vms {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		_, err := cl.VM.Create(cctx, &tandemv1.CreateVMRequest{Name: vmName(i), Vcpus: 1, MemoryMib: vmMemoryMiB,
			Disks:  []*tandemv1.VMDisk{{SizeBytes: vmDiskBytes, Replicas: 2}},
			Kernel: b.img.Kernel, Initrd: b.img.Initrd, Cmdline: cmdline, Priority: int32(b.cfg.vms - i), Node: victim.Name, Start: true})
		cancel()
		if err != nil {
			return fmt.Errorf("create %s on %s: %w", vmName(i), victim.Name, err)
		}
	}
	if _, err := b.waitVMs(ctx, func(v *tandemv1.VMInfo) bool { return v.GetNode() == victim.Name && v.GetState() == "running" }); err != nil {
		return fmt.Errorf("VMs not running on %s: %w", victim.Name, err)
	}
	b.log.Info("VMs running", "node", victim.Name, "vms", b.cfg.vms, "seconds", time.Since(start).Seconds())
	return nil
}

// waitVMs waits up to five minutes until every VM of the bench satisfies
// ok, asking a node other than the victim; it returns how many did.
func (b *bench) waitVMs(ctx context.Context, ok func(*tandemv1.VMInfo) bool) (int, error) {
	via := b.c.Nodes[0]
	for _, n := range b.c.Nodes {
		if n != b.victim {
			via = n
			break
		}
	}
	cl, err := b.client(ctx, via)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lr, err := cl.VM.List(cctx, &tandemv1.ListVMsRequest{})
		cancel()
		n := 0
		if err == nil {
			for _, v := range lr.GetVms() {
				if ok(v) {
					n++
				}
			}
		}
		if n == b.cfg.vms {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("%d of %d VMs after 5 minutes (last error: %v)", n, b.cfg.vms, err)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return n, err
		}
	}
}

// waitRestarted waits until every VM runs on a node other than the lost
// one.
func (b *bench) waitRestarted(ctx context.Context, f *Failover) {
	dead := b.victim.Name
	n, err := b.waitVMs(ctx, func(v *tandemv1.VMInfo) bool {
		return v.GetNode() != "" && v.GetNode() != dead && v.GetState() == "running"
	})
	f.VMs, f.VMsRestarted = b.cfg.vms, n
	if err != nil {
		f.VMNote = err.Error()
	}
}

// vmTimes reads from the events when each VM was restarted (vm-recovered)
// and the recovery's summary (vms-recovered).
func (b *bench) vmTimes(killed, fenced time.Time, events []*tandemv1.Event, f *Failover) {
	dead := b.victim.Name
	var at []time.Time
	for _, e := range events {
		if e.GetKind() == "vm-recovered" && e.GetAt().AsTime().After(killed) {
			at = append(at, e.GetAt().AsTime())
		}
		if e.GetKind() == "vms-recovered" && e.GetNode() == dead {
			f.VMSummary = e.GetDetail()
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	if len(at) > 0 {
		f.VMFirstS = at[0].Sub(killed).Seconds()
		f.VMLastS = at[len(at)-1].Sub(killed).Seconds()
		if !fenced.IsZero() {
			f.VMLastAfterFencedS = at[len(at)-1].Sub(fenced).Seconds()
		}
	}
	f.VMEvents = len(at)
}

// ensureGuest finds the module's test guest image (built if missing).
func ensureGuest(ctx context.Context) (guest.Image, error) {
	root, err := vmbench.ModuleRoot(ctx)
	if err != nil {
		return guest.Image{}, err
	}
	return guest.EnsureImage(ctx, root)
}
