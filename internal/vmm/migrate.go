package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/placement"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Migrate moves a running VM by live migration, in the Ganeti order of
// docs/design.md I5: the target's replicas are UpToDate; the primary allows the
// target as second opener; libvirt migrates peer to peer over the backend
// network with the target QEMU on the target's own export; the target's
// first write (or the end of the migration) commits it as the single
// primary; the source stays an UpToDate secondary. If the migration fails
// the VM keeps running on the source and the window is closed; if the
// domain moved but the handover fails, the VM is recorded on the target
// and the source retries the handover (switchover).
func (m *Manager) Migrate(ctx context.Context, req *tandemv1.MigrateVMRequest, send func(*tandemv1.MigrateProgress) error) error {
	ms, _, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return err
	}
	if v.Desired != consensus.VMStarted || v.Node == "" {
		return status.Errorf(codes.FailedPrecondition, "VM %s is %s; only a running VM migrates (start it where you want it with --node)", v.Name, v.Desired)
	}
	info := m.live(ctx, ms, v, 3*time.Second)
	if info.State != "running" {
		return status.Errorf(codes.FailedPrecondition, "VM %s is %s on %s, not running", v.Name, info.State, v.Node)
	}
	cv := m.View(ctx, ms)
	to := req.To
	switch {
	case to == v.Node:
		return status.Errorf(codes.InvalidArgument, "VM %s already runs on %s", v.Name, to)
	case to == "":
		p := placement.Place(&cv.Placement, PlacementVM(v), v.Node)
		if p.Node == "" {
			return status.Errorf(codes.FailedPrecondition, "no node can take VM %s: %s", v.Name, p.Why())
		}
		to = p.Node
	default:
		if r := placement.CanHost(&cv.Placement, PlacementVM(v), to); r != "" {
			return status.Errorf(codes.FailedPrecondition, "cannot migrate VM %s to %s: %s", v.Name, to, r)
		}
	}
	return m.relayMigration(ctx, ms, v, to, req.MaxDowntimeMs, req.BandwidthMibps, send)
}

// relayMigration asks the VM's node to migrate it to to, and relays its
// progress.
func (m *Manager) relayMigration(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, to string, maxDowntimeMs uint32, bandwidth uint64, send func(*tandemv1.MigrateProgress) error) error {
	c, err := m.peerAt(ms, v.Node)
	if err != nil {
		return err
	}
	in, err := c.VMMigrate(ctx, &tandemv1.PeerMigrateRequest{Vm: VMInfoOf(v), To: to, MaxDowntimeMs: maxDowntimeMs, BandwidthMibps: bandwidth})
	if err != nil {
		return err
	}
	for {
		p, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(status.Code(err), "migration of %s from %s to %s: %s", v.Name, v.Node, to, grpcMessage(err))
		}
		if err := send(p); err != nil {
			return err
		}
	}
}

// VMMigrate runs on the source node: it opens the migration windows,
// migrates the domain, hands the volumes over and records the VM's new
// node. Progress goes to send; its errors are ignored (the migration does
// not stop because the caller left).
func (m *Manager) VMMigrate(ctx context.Context, req *tandemv1.PeerMigrateRequest, sendFn func(*tandemv1.MigrateProgress) error) error {
	self := m.self()
	vm := req.Vm
	if vm == nil || vm.Name == "" || req.To == "" || req.To == self {
		return status.Error(codes.InvalidArgument, "a VM and another node are needed")
	}
	// A second migration of the same VM would fail in libvirt ("another
	// migration job is already running"), but only after opening the
	// target's window, and its failure path would close the window the
	// first one still uses (found by the fault-schedule runner).
	m.migMu.Lock()
	if to, ok := m.migrating[vm.Name]; ok {
		m.migMu.Unlock()
		return status.Errorf(codes.FailedPrecondition, "VM %s is being migrated from %s to %s already; wait for it to finish", vm.Name, self, to)
	}
	m.migrating[vm.Name] = req.To
	m.migMu.Unlock()
	defer func() {
		m.migMu.Lock()
		delete(m.migrating, vm.Name)
		m.migMu.Unlock()
	}()
	defer m.crash.markBusy(vm.Name)()
	send := func(p *tandemv1.MigrateProgress) {
		p.From, p.To = self, req.To
		_ = sendFn(p)
	}
	drv, err := m.Driver(ctx)
	if err != nil {
		return computeErr(err)
	}
	if st, err := drv.State(ctx, vm.Name); err != nil || st != compute.StateRunning {
		return status.Errorf(codes.FailedPrecondition, "VM %s is not running on %s", vm.Name, self)
	}
	ms, err := m.metaLocal()
	if err != nil {
		return err
	}
	tc, err := m.peerAt(ms, req.To)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	target, err := tc.ComputeInfo(cctx, &tandemv1.ComputeInfoRequest{})
	cancel()
	if err != nil {
		return status.Errorf(codes.Unavailable, "target %s does not answer: %s", req.To, grpcMessage(err))
	}
	if !target.Available {
		return status.Errorf(codes.FailedPrecondition, "target %s cannot run VMs: %s", req.To, target.Reason)
	}
	// RBD disks move with the VM: the target's QEMU takes the image's
	// lock from this one (librbd's cooperative hand-over), and the owner
	// is recorded after the switchover.
	repl := replicated(ms, vm.Volumes)
	for _, name := range repl {
		ok, err := m.holds(name)
		if err != nil {
			return err
		}
		if !ok || !m.vols.ServingPrimary(name) {
			return status.Errorf(codes.FailedPrecondition, "node %s is not the primary of volume %s", self, name)
		}
	}
	for _, name := range vm.Volumes {
		if isRBD(ms, name) && ms.Volumes[name].Owner != self {
			return status.Errorf(codes.FailedPrecondition, "node %s is not the owner of RBD volume %s (%s is)", self, name, ms.Volumes[name].Owner)
		}
	}
	closeWindows := func(reason string) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, name := range repl {
			if err := m.vols.EndDual(cctx, name, reason); err != nil {
				m.st.Log.Error("cannot close the migration window", "volume", name, "err", err)
			}
		}
	}
	// I5 steps 1-2: the shard refuses a target that is not UpToDate.
	send(&tandemv1.MigrateProgress{Phase: "preparing", Message: preparingMessage(req.To, len(repl), len(vm.Volumes)-len(repl))})
	for _, name := range repl {
		if err := m.vols.AllowDual(ctx, name, req.To); err != nil {
			closeWindows("migration refused")
			return apierr.From(fmt.Errorf("volume %s: %w", name, err))
		}
	}
	// The target attaches its own verified copy of the CD-ROM's image,
	// fetched now if it has none.
	destCDROM := ""
	if vm.Cdrom != "" {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		resp, err := tc.ImageFetch(cctx, &tandemv1.PeerImageRequest{Image: vm.Cdrom})
		cancel()
		if err != nil {
			closeWindows("CD-ROM image not on the target")
			return status.Errorf(status.Code(err), "target %s cannot attach the CD-ROM image %s: %s", req.To, vm.Cdrom, grpcMessage(err))
		}
		destCDROM = resp.Path
	}
	// A UEFI VM's variable store: recorded from this node's file now,
	// and written to the target's before QEMU starts there.
	destNVRAM := ""
	if vm.Firmware == compute.FirmwareUEFI {
		p, err := m.handNVRAM(ctx, vm, tc)
		if err != nil {
			closeWindows("NVRAM not on the target")
			return err
		}
		destNVRAM = p
	}
	// The cloud-init seed: the target builds its own from the record.
	destSeed, err := m.handSeed(ctx, vm, req.To, tc)
	if err != nil {
		closeWindows("cloud-init seed not on the target")
		return err
	}
	dest := m.domainSpec(vm, target.NbdSocket, destCDROM, destNVRAM, destSeed)
	if err := m.withRBD(ms, &dest); err != nil {
		closeWindows("RBD disks not reachable")
		return err
	}
	if target.NbdSocket != "" {
		dest.SerialLog = consoleLogOn(target, vm.Name)
	}
	opts := compute.MigrateOptions{
		MaxDowntime:    time.Duration(req.MaxDowntimeMs) * time.Millisecond,
		BandwidthMiBps: req.BandwidthMibps,
		DestSpec:       &dest,
		Progress: func(p compute.MigrateProgress) {
			send(&tandemv1.MigrateProgress{Phase: "migrating", MemoryTotal: p.MemoryTotal, MemoryProcessed: p.MemoryProcessed, MemoryRemaining: p.MemoryRemaining})
		},
	}
	start := time.Now()
	// Over TLS this libvirtd is the client of the target's: it presents
	// this node's certificate, from the files the daemon keeps in sync.
	destURI := compute.WithPKIPath(target.MigrationUri, nodedir.Dir(m.st.Config.DataDir).LibvirtPKIDir())
	// QEMU's stream over TLS only when configured: see
	// config.ComputeConfig.MigrationStreamTLS.
	opts.TLS = compute.IsTLSURI(destURI) && m.st.Config.Compute.MigrationStreamTLS
	res, merr := drv.Migrate(ctx, vm.Name, destURI, opts)
	if merr != nil {
		why, stays := m.stayedHere(ctx, drv, tc, vm, req.To)
		if stays {
			closeWindows("migration failed")
			m.st.Log.Warn("migration failed; the VM stays recorded here", "vm", vm.Name, "to", req.To, "here", why, "err", merr)
			if why == "" {
				return status.Errorf(codes.Aborted, "live migration failed, VM %s keeps running on %s: %v", vm.Name, self, merr)
			}
			return status.Errorf(codes.Aborted, "live migration failed, VM %s stays on %s (%s): %v", vm.Name, self, why, merr)
		}
		m.st.Log.Error("migration reported failure but the VM left this node; completing the handover", "vm", vm.Name, "why", why, "err", merr)
	}
	send(&tandemv1.MigrateProgress{Phase: "handover", Message: "committing " + req.To + " as primary"})
	rec, err := m.switchover(ctx, vm, req.To)
	if err != nil {
		return err
	}
	if res.StatsFrom != "destination" {
		// Downtime is only known where the domain now runs.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if st, err := tc.VMMigrationStats(sctx, &tandemv1.PeerVMRequest{Vm: vm}); err == nil && st.TotalMs > 0 {
			res.Total = time.Duration(st.TotalMs) * time.Millisecond
			res.Downtime = time.Duration(st.DowntimeMs) * time.Millisecond
			res.StatsFrom = "destination"
		}
		cancel()
	}
	total := res.Total
	if total == 0 {
		total = time.Since(start)
	}
	out := VMInfoOf(rec)
	out.State = "running"
	send(&tandemv1.MigrateProgress{Phase: "done", DowntimeMs: uint32(res.Downtime / time.Millisecond), TotalMs: uint32(total / time.Millisecond), Vm: out,
		Message: fmt.Sprintf("migrated in %s, downtime %s (%s)", total.Round(time.Millisecond), res.Downtime, res.StatsFrom)})
	return nil
}

// VMMigrationStats runs on the destination after a migration.
func (m *Manager) VMMigrationStats(ctx context.Context, vm *tandemv1.VMInfo) (*tandemv1.MigrateProgress, error) {
	if vm == nil || vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	drv, err := m.Driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	r, ok := drv.IncomingMigrationStats(ctx, vm.Name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no completed migration statistics for %s on %s", vm.Name, m.self())
	}
	return &tandemv1.MigrateProgress{Phase: "done", TotalMs: uint32(r.Total / time.Millisecond), DowntimeMs: uint32(r.Downtime / time.Millisecond)}, nil
}

// preparingMessage says what the preparing phase does: replicated volumes
// open a dual-primary window for the target; RBD disks need nothing
// (the target's QEMU asks for the image's lock at its first write).
func preparingMessage(to string, replicated, rbd int) string {
	switch {
	case replicated > 0 && rbd > 0:
		return fmt.Sprintf("allowing %s to open the replicated volumes; its QEMU takes the RBD images' locks at its first write", to)
	case replicated > 0:
		return "allowing " + to + " to open the volumes"
	case rbd > 0:
		return fmt.Sprintf("disks on RBD: %s's QEMU takes the images' locks at its first write", to)
	}
	return "no disks to hand over"
}

// stateReader is what stayedHere needs of the compute driver.
type stateReader interface {
	State(ctx context.Context, name string) (compute.State, error)
}

// stayedHere decides, after a failed migration, whether the guest is still
// this node's: it runs here (the migration failed cleanly), or its domain
// is still defined here but stopped while the target does not run it. A
// domain that moved is undefined here (Migrate undefines the source), so
// one defined but stopped was killed here, not moved: this node's
// self-fence destroyed it in the middle of a migration that never reached
// the target, which was then recorded as the VM's node, where no domain
// existed (the fault-schedule runner's seed 7110: down for good).
// Recorded here, the crash restart starts it again. The same holds when
// libvirtd here does not answer (killed during the migration) and the
// target does not run the guest. When the target runs it (the migration
// completed but its last step failed) or cannot be asked, the VM is taken
// as moved, as before (finding 11). why says what was found, for the
// log; it is empty only for a guest that runs here.
func (m *Manager) stayedHere(ctx context.Context, drv stateReader, tc tandemv1.PeerClient, vm *tandemv1.VMInfo, to string) (why string, stays bool) {
	ctx = context.WithoutCancel(ctx)
	st, err := drv.State(ctx, vm.Name)
	switch {
	case err == nil && (st == compute.StateRunning || st == compute.StatePaused || st == compute.StateBlocked):
		return "", true // the message says it keeps running here
	case err != nil && compute.IsNotFoundErr(err):
		return "its domain is gone from here (undefined by the migration)", false
	}
	// Stopped here, or libvirtd here does not answer (killed in the
	// middle of the migration, seed 7118: its QEMU may run on): the
	// target says whether it took the guest.
	here := "unknown (libvirtd does not answer)"
	if err == nil {
		here = st.String()
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	there, terr := tc.VMState(sctx, &tandemv1.PeerVMRequest{Vm: vm})
	if terr != nil {
		return fmt.Sprintf("its domain is %s here and %s cannot be asked (%v)", here, to, terr), false
	}
	switch there.GetState() {
	case compute.StateRunning.String(), compute.StatePaused.String(), compute.StateBlocked.String():
		return fmt.Sprintf("its domain is %s here and %s on %s", here, there.GetState(), to), false
	}
	return fmt.Sprintf("its domain is %s here and %s on %s: it did not move; it is resumed or restarted here", here, orNone(there.GetState()), to), true
}
