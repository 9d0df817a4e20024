package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/netannounce"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// errComputeOff: this node runs no VMs (witness, or compute switched off).
var errComputeOff = errors.New("compute is off on this node")

// Driver is this node's libvirtd connection. It is made on first use and
// again after it breaks, so tandemd starts (and serves volumes) while
// libvirtd is down.
func (m *Manager) Driver(ctx context.Context) (*compute.Driver, error) {
	cfg := m.st.Config
	if !cfg.ComputeEnabled() {
		return nil, errComputeOff
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drv != nil {
		if _, err := m.drv.Running(ctx); err == nil {
			return m.drv, nil
		}
		_ = m.drv.Close()
		m.drv = nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	drv, err := compute.Dial(dctx, cfg.Compute.LibvirtSocket, cfg.Compute.LibvirtURI,
		compute.WithDomainType(m.domainType(ctx).typ), compute.WithLogger(m.st.Log))
	if err != nil {
		return nil, fmt.Errorf("libvirtd at %s: %w", cfg.Compute.LibvirtSocket, err)
	}
	m.drv = drv
	return drv, nil
}

// Close drops the libvirtd connection.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drv != nil {
		_ = m.drv.Close()
		m.drv = nil
	}
}

// Run resumes VMs that QEMU paused on an I/O error once this node serves
// all their volumes again (a tandemd restart drops the exports' sockets),
// and restarts VMs that stopped on their own, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	if !m.st.Config.ComputeEnabled() {
		return
	}
	warm := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if !warm {
			if drv, err := m.Driver(ctx); err == nil {
				start := time.Now()
				if err := drv.Warm(ctx); err != nil {
					m.log.Warn("libvirt warm-up failed", "err", err)
				} else {
					m.log.Info("libvirt ready (QEMU capabilities probed)", "took", time.Since(start).Round(time.Millisecond))
				}
				warm = true
			}
		}
		if m.st.Fence.Fenced() {
			continue
		}
		ms, err := m.metaLocal()
		if err != nil {
			continue
		}
		drv, err := m.Driver(ctx)
		if err != nil {
			continue
		}
		ours := func(name string) bool { return m.ours(ms, name) }
		confirm := m.confirmer(ctx)
		recorded := m.recordedHere(ctx)
		_, _ = drv.ResumeIOErrorPaused(ctx, func(name string) bool {
			return (ours(name) || m.takeOverPaused(ctx, ms, name, recorded)) && confirm(name)
		})
		m.restartCrashed(ctx, drv, ms, ours, confirm)
		m.claimMigratedRBD(ctx, drv, ms, recorded)
		m.syncNVRAMs(ctx, ms)
		m.syncCephSecrets(ctx, drv, ms)
	}
}

// ours reports whether the VM name should run here now: the cluster wants
// it started on this node and this node serves every volume of it as
// primary.
func (m *Manager) ours(ms *consensus.MetaState, name string) bool {
	v := ms.VMs[name]
	if v == nil || v.Node != m.self() || v.Desired != consensus.VMStarted {
		return false
	}
	for _, vol := range v.Spec.Volumes {
		if e, ok := ms.Volumes[vol]; ok && e.IsRBD() {
			if e.Owner != m.self() {
				return false
			}
			continue
		}
		if ok, err := m.holds(vol); err != nil || !ok || !m.vols.ServingPrimary(vol) {
			return false
		}
	}
	return true
}

// confirmer returns a check, on metadata read with quorum (once, at its
// first use), that a VM should run here and its HA state is started. The
// local copy may be stale: a node just powered on replays an old view, in
// which a VM that HA restarted elsewhere meanwhile still runs here and its
// RBD disks are still this node's. Restarting or resuming it on that view
// ran it twice (e2e TestRBDHAFailover in CI, after the host's power-on):
// only a linearizable read decides an action.
func (m *Manager) confirmer(ctx context.Context) func(name string) bool {
	fresh := m.freshOnce(ctx)
	return func(name string) bool {
		ms, ok := fresh()
		if !ok {
			return false
		}
		v := ms.VMs[name]
		return v != nil && (v.HAState == "" || v.HAState == consensus.HAStarted) && m.ours(ms, name)
	}
}

// freshOnce returns the metadata read with quorum at its first call, and
// whether that read succeeded, for the checks of one pass of the run loop.
func (m *Manager) freshOnce(ctx context.Context) func() (*consensus.MetaState, bool) {
	var (
		ms   *consensus.MetaState
		err  error
		read bool
	)
	return func() (*consensus.MetaState, bool) {
		if !read {
			read = true
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ms, _, err = m.fresh(fctx)
			cancel()
		}
		return ms, err == nil
	}
}

// recordedHere returns a check, on metadata read with quorum (once, at
// its first use), that a VM is started here with HA state started,
// whether this node serves its volumes or not.
func (m *Manager) recordedHere(ctx context.Context) func(name string) bool {
	fresh := m.freshOnce(ctx)
	return func(name string) bool {
		ms, ok := fresh()
		if !ok {
			return false
		}
		v := ms.VMs[name]
		return v != nil && v.Node == m.self() && v.Desired == consensus.VMStarted && (v.HAState == "" || v.HAState == consensus.HAStarted)
	}
}

// takeOverPaused takes over, for a VM that QEMU paused on an I/O error,
// the volumes whose migration window is open for this node, and reports
// whether it did. A migration whose source could not hand over (its
// target's replica was Outdated) leaves the VM here, recorded here, and
// its first write refused; once this replica is UpToDate again the
// takeover succeeds and the VM is resumed (see switchover). The VM must be
// recorded here on fresh metadata (recorded): a node just back from a
// fence must not take a volume over on a stale copy.
func (m *Manager) takeOverPaused(ctx context.Context, ms *consensus.MetaState, name string, recorded func(string) bool) bool {
	v := ms.VMs[name]
	if v == nil || v.Node != m.self() || v.Desired != consensus.VMStarted || (v.HAState != "" && v.HAState != consensus.HAStarted) {
		return false
	}
	var window []string
	for _, vol := range v.Spec.Volumes {
		if e, ok := ms.Volumes[vol]; ok && e.IsRBD() {
			continue // ours decides; RBD has no window
		}
		if m.vols.ServingPrimary(vol) {
			continue
		}
		if r := m.vols.Record(vol); r == nil || r.MigrationTarget != m.self() {
			return false
		}
		window = append(window, vol)
	}
	if len(window) == 0 || !recorded(name) {
		return false
	}
	for _, vol := range window {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.vols.Takeover(tctx, vol)
		cancel()
		if err != nil {
			m.log.Info("a migrated VM's volume cannot be taken over yet", "vm", name, "volume", vol, "err", err)
			return false
		}
	}
	m.log.Warn("took over a migrated VM's volumes the source could not hand over", "vm", name, "volumes", window)
	m.event(ctx, consensus.Event{Kind: "vm-takeover", Node: m.self(), VM: name,
		Detail: fmt.Sprintf("this node took over %v after its migration", window)})
	return m.ours(ms, name)
}

// claimMigratedRBD records this node as the owner of the RBD disks of a
// VM that runs here, recorded here on fresh metadata with its HA state
// started, while the catalog names another owner: a live migration whose
// owner move failed on the source (switchover records the VM here
// anyway). QEMU's librbd took the images' locks with the migration, so the
// guest writes; but the catalog decides everything else (a crash restart
// here needs this node to own the disks, HA fences the owner), so it must
// name the one writer. As with takeOverPaused, the target does it, not the
// source: only here is it known that the VM still runs here. The old
// owner is asked to close first (MoveRBDOwner); it keeps no client of a
// VM's disk.
func (m *Manager) claimMigratedRBD(ctx context.Context, drv crashDriver, ms *consensus.MetaState, recorded func(string) bool) {
	self := m.self()
	for name, v := range ms.VMs {
		if v.Node != self || v.Desired != consensus.VMStarted || (v.HAState != "" && v.HAState != consensus.HAStarted) {
			continue
		}
		var move []string
		for _, vol := range v.Spec.Volumes {
			if e, ok := ms.Volumes[vol]; ok && e.IsRBD() && e.Owner != self {
				move = append(move, vol)
			}
		}
		if len(move) == 0 {
			continue
		}
		if st, err := drv.State(ctx, name); err != nil || (st != compute.StateRunning && st != compute.StatePaused && st != compute.StateBlocked) {
			continue
		}
		if !recorded(name) {
			continue
		}
		r, err := m.rbd()
		if err != nil {
			return
		}
		moved := true
		for _, vol := range move {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := r.MoveRBDOwner(cctx, vol, self, "VM "+name+" runs here after its live migration")
			cancel()
			if err != nil {
				m.log.Info("the RBD disk of a migrated VM cannot be claimed yet", "vm", name, "volume", vol, "err", err)
				moved = false
				break
			}
		}
		if moved {
			m.log.Warn("recorded this node as the owner of a migrated VM's RBD disks, which the source could not move", "vm", name, "volumes", move)
			m.event(ctx, consensus.Event{Kind: "vm-takeover", Node: self, VM: name,
				Detail: fmt.Sprintf("this node now owns %v, its RBD disks, after its migration", move)})
		}
	}
}

// crashDriver is what restartCrashed needs of the compute driver.
type crashDriver interface {
	State(ctx context.Context, name string) (compute.State, error)
	Start(ctx context.Context, name string) error
}

// restartCrashed starts again, here, the VMs that should run here but whose
// domain stopped on its own: QEMU crashed or was killed, or the guest
// powered off. Only a domain still defined here counts (a migrated one is
// undefined), only when this node serves every volume of the VM as primary
// (ours), its HA state is started, and no local operation is under way on
// it; and only as crashTracker.check decides, and confirm, on fresh
// metadata, agrees.
func (m *Manager) restartCrashed(ctx context.Context, drv crashDriver, ms *consensus.MetaState, ours, confirm func(string) bool) {
	for name, v := range ms.VMs {
		if !ours(name) || (v.HAState != "" && v.HAState != consensus.HAStarted) {
			continue
		}
		if m.crash.isBusy(name) {
			continue
		}
		st, err := drv.State(ctx, name)
		down := err == nil && (st == compute.StateShutOff || st == compute.StateCrashed)
		verdict, recent := m.crash.check(name, down, m.st.Now())
		switch verdict {
		case crashGiveUp:
			m.log.Error("VM keeps stopping; not restarting it again for now", "vm", name, "state", st,
				"restarts", recent, "window", restartWindow)
			m.event(ctx, consensus.Event{Kind: "vm-restart-given-up", Node: m.self(), VM: name,
				Detail: fmt.Sprintf("%s again after %d restarts within %s", st, recent, restartWindow)})
			continue
		case crashRestart:
		default:
			continue
		}
		if !confirm(name) {
			// Not now; a later check asks again. The verdict's busy mark
			// must go, or the VM is never looked at again (chaos seed
			// 2012: QEMU killed while the node had no quorum, the VM
			// stayed down after quorum came back).
			m.crash.skipped(name)
			m.log.Info("a stopped VM this node's metadata copy places here is not confirmed with quorum; not restarting it", "vm", name)
			continue
		}
		err = drv.Start(ctx, name)
		m.crash.restarted(name)
		if err != nil {
			m.log.Error("restarting a stopped VM failed", "vm", name, "was", st, "err", err)
			continue
		}
		m.log.Warn("VM stopped on its own; started it again", "vm", name, "was", st)
		m.event(ctx, consensus.Event{Kind: "vm-restarted", Node: m.self(), VM: name,
			Detail: fmt.Sprintf("domain was %s while it should run here", st)})
	}
}

// consoleLog is where the serial console of a VM running here is logged.
func (m *Manager) consoleLog(name string) string {
	return filepath.Join(m.st.Config.DataDir, "vms", name+".console.log")
}

// consoleLogOn is the console log path on another node: the same layout
// under its data dir, which holds its NBD socket.
func consoleLogOn(target *tandemv1.ComputeStatus, name string) string {
	return filepath.Join(filepath.Dir(target.NbdSocket), "vms", name+".console.log")
}

// status reports this node's compute. Used memory counts the VMs the
// cluster records as started here, so that placement sees reservations,
// not what guests happen to touch.
func (m *Manager) status(ctx context.Context) *tandemv1.ComputeStatus {
	cfg := m.st.Config
	out := &tandemv1.ComputeStatus{MigrationUri: cfg.Compute.MigrationURI, NbdSocket: m.vols.NBDSocket(), Bridge: cfg.Compute.Bridge,
		Cpus: uint32(runtime.NumCPU())}
	drv, err := m.Driver(ctx)
	if a := m.resolvedAccel(); a != nil {
		out.Accel, out.AccelDetail = a.typ, a.detail
	}
	if err != nil {
		out.Reason = err.Error()
		return out
	}
	total, free, err := drv.NodeMemory(ctx)
	if err != nil {
		out.Reason = err.Error()
		return out
	}
	out.HostFreeMib = free
	out.CapacityMib = cfg.Compute.MemoryMiB
	if out.CapacityMib == 0 && total > 0 {
		out.CapacityMib = total - min(total, uint64(1024))
	}
	if running, err := drv.Running(ctx); err == nil {
		out.Running = running
	}
	if ms, err := m.metaLocal(); err == nil {
		out.UsedMib = usedMiB(ms, m.self())
	}
	out.Available = true
	return out
}

// usedMiB is the memory of the VMs the cluster runs on node.
func usedMiB(ms *consensus.MetaState, node string) uint64 {
	var used uint64
	for _, v := range ms.VMs {
		if v.Node == node && v.Desired == consensus.VMStarted {
			used += uint64(v.Spec.MemoryMiB)
		}
	}
	return used
}

// domainSpec renders a VM for a node: every disk is that node's export,
// and cdrom is the path of its copy of the image in the CD-ROM drive.
// nvram is the path of its UEFI variable store there ("" for BIOS), seed
// that of its cloud-init seed ("" for none).
func (m *Manager) domainSpec(vm *tandemv1.VMInfo, nbdSocket, cdrom, nvram, seed string) compute.VMSpec {
	spec := compute.VMSpec{Name: vm.Name, UUID: vm.Uuid, VCPUs: int(vm.Vcpus), MemoryMiB: int(vm.MemoryMib),
		Kernel: vm.Kernel, Initrd: vm.Initrd, Cmdline: vm.Cmdline, SerialLog: m.consoleLog(vm.Name),
		HasCDROM: vm.HasCdrom, CDROM: cdrom, Boot: slices.Clone(vm.Boot), Firmware: vm.Firmware, NVRAM: nvram, CloudInit: seed,
		Machine: vm.Machine, CPUModel: vm.CpuModel}
	if spec.CPUModel == "" {
		// The cluster's model, as this node's metadata has it now: a
		// change of vm.cpu_model reaches each VM at its next start.
		if ms, err := m.metaLocal(); err == nil {
			spec.CPUModel = clusterCPUModel(ms)
		}
	}
	for i, v := range vm.Volumes {
		spec.Disks = append(spec.Disks, compute.DiskSpec{Volume: v, Socket: nbdSocket, Boot: i == 0 && vm.Kernel == ""})
	}
	for _, n := range vm.Nics {
		b := n.Bridge
		if b == "" {
			b = m.st.Config.Compute.Bridge
		}
		spec.NICs = append(spec.NICs, compute.NICSpec{Bridge: b, MAC: n.Mac})
	}
	return spec
}

// waitPrimary waits until this node serves every volume as primary.
func (m *Manager) waitPrimary(ctx context.Context, vols []string) error {
	self := m.self()
	for _, name := range vols {
		ok, err := m.holds(name)
		if err != nil {
			return err
		}
		if !ok {
			return status.Errorf(codes.FailedPrecondition, "node %s holds no replica of volume %s", self, name)
		}
		for !m.vols.ServingPrimary(name) {
			m.vols.Reconcile(name)
			if m.vols.ServingPrimary(name) {
				break
			}
			select {
			case <-ctx.Done():
				if r := m.vols.Record(name); r != nil {
					return status.Errorf(codes.FailedPrecondition, "node %s is not the primary of %s (%s is, epoch %d); a VM runs only where its volumes' primary is", self, name, r.Primary, r.Epoch)
				}
				return status.Errorf(codes.FailedPrecondition, "volume %s is not ready on %s", name, self)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func (m *Manager) vmInfo(ctx context.Context, drv *compute.Driver, vm *tandemv1.VMInfo) *tandemv1.VMInfo {
	st, err := drv.State(ctx, vm.Name)
	vm.Node = m.self()
	vm.ConsoleLog = m.consoleLog(vm.Name)
	switch {
	case compute.IsNotFoundErr(err):
		vm.State = "undefined"
	case err != nil:
		vm.State = "unknown"
		vm.Warning = err.Error()
	default:
		vm.State = st.String()
	}
	return vm
}

func computeErr(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, errComputeOff) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if errors.Is(err, compute.ErrInvalidSpec) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// announce sends gratuitous ARP and unsolicited neighbour advertisements
// for the VM's declared addresses on its bridges, as Heartbeat's IPaddr
// does after a takeover, so switches and peers learn the new port at once.
func (m *Manager) announce(vm *tandemv1.VMInfo) {
	ctx := m.bg
	for _, n := range vm.Nics {
		var ips []netip.Addr
		for _, s := range n.Ips {
			if a, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, a)
			} else if p, err := netip.ParsePrefix(s); err == nil {
				ips = append(ips, p.Addr())
			}
		}
		mac, err := net.ParseMAC(n.Mac)
		if len(ips) == 0 || err != nil {
			continue
		}
		bridge := n.Bridge
		if bridge == "" {
			bridge = m.st.Config.Compute.Bridge
		}
		if err := netannounce.Announce(ctx, bridge, mac, ips, netannounce.Options{Logger: m.log}); err != nil {
			m.log.Warn("address announcement failed", "vm", vm.Name, "bridge", bridge, "err", err)
			continue
		}
		m.log.Info("addresses announced", "vm", vm.Name, "bridge", bridge, "mac", mac, "ips", ips)
	}
}
