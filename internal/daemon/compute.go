package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/netannounce"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// computeManager runs this node's VMs through its libvirtd. The connection
// is made on first use and again after it breaks, so tandemd starts (and
// serves volumes) while libvirtd is down.
type computeManager struct {
	d   *Daemon
	log *slog.Logger

	mu  sync.Mutex
	drv *compute.Driver

	// Crash restarts (restartCrashed). busy counts local operations in
	// flight per VM (start, stop, migrate, undefine): a VM in one is never
	// restarted behind its back.
	rmu      sync.Mutex
	busy     map[string]int
	down     map[string]int         // consecutive checks that found it down
	restarts map[string][]time.Time // recent restarts, for the limit
}

// Crash restart limits: a VM down for restartAfter consecutive checks (one
// a second) is started again, at most restartLimit times per restartWindow.
const (
	restartAfter  = 2
	restartLimit  = 3
	restartWindow = 10 * time.Minute
)

// markBusy records a local operation on a VM; call the result when done.
func (c *computeManager) markBusy(name string) func() {
	c.rmu.Lock()
	c.busy[name]++
	c.rmu.Unlock()
	return func() {
		c.rmu.Lock()
		if c.busy[name]--; c.busy[name] <= 0 {
			delete(c.busy, name)
		}
		delete(c.down, name)
		c.rmu.Unlock()
	}
}

func newComputeManager(d *Daemon) *computeManager {
	c := &computeManager{d: d, log: d.log.With("component", "compute"),
		busy: map[string]int{}, down: map[string]int{}, restarts: map[string][]time.Time{}}
	if d.cfg.ComputeEnabled() {
		// Incoming migrations log the console here before tandemd hears
		// of the VM.
		if err := os.MkdirAll(filepath.Join(d.cfg.DataDir, "vms"), 0o750); err != nil {
			c.log.Error("cannot create the VM console directory", "err", err)
		}
	}
	return c
}

// errComputeOff: this node runs no VMs (witness, or compute switched off).
var errComputeOff = errors.New("compute is off on this node")

func (c *computeManager) driver(ctx context.Context) (*compute.Driver, error) {
	cfg := c.d.cfg
	if !cfg.ComputeEnabled() {
		return nil, errComputeOff
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drv != nil {
		if _, err := c.drv.Running(ctx); err == nil {
			return c.drv, nil
		}
		_ = c.drv.Close()
		c.drv = nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	drv, err := compute.Dial(dctx, cfg.Compute.LibvirtSocket, cfg.Compute.LibvirtURI,
		compute.WithDomainType(cfg.Compute.DomainType), compute.WithLogger(c.d.log))
	if err != nil {
		return nil, fmt.Errorf("libvirtd at %s: %w", cfg.Compute.LibvirtSocket, err)
	}
	c.drv = drv
	return drv, nil
}

func (c *computeManager) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drv != nil {
		_ = c.drv.Close()
		c.drv = nil
	}
}

// run resumes VMs that QEMU paused on an I/O error once this node serves
// all their volumes again (a tandemd restart drops the exports' sockets).
func (c *computeManager) run(ctx context.Context) {
	if !c.d.cfg.ComputeEnabled() {
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
			if drv, err := c.driver(ctx); err == nil {
				start := time.Now()
				if err := drv.Warm(ctx); err != nil {
					c.log.Warn("libvirt warm-up failed", "err", err)
				} else {
					c.log.Info("libvirt ready (QEMU capabilities probed)", "took", time.Since(start).Round(time.Millisecond))
				}
				warm = true
			}
		}
		if c.d.ha.frozen() {
			continue
		}
		ms, err := c.d.metaLocal()
		if err != nil {
			continue
		}
		vols := c.d.volumes()
		if vols == nil {
			continue
		}
		drv, err := c.driver(ctx)
		if err != nil {
			continue
		}
		ours := func(name string) bool {
			v := ms.VMs[name]
			if v == nil || v.Node != c.d.cfg.NodeName || v.Desired != consensus.VMStarted {
				return false
			}
			for _, vol := range v.Spec.Volumes {
				if !vols.ServingPrimary(vol) {
					return false
				}
			}
			return true
		}
		_, _ = drv.ResumeIOErrorPaused(ctx, ours)
		c.restartCrashed(ctx, drv, ms, ours)
	}
}

// restartCrashed starts again, here, the VMs that should run here but whose
// domain stopped on its own: QEMU crashed or was killed, or the guest
// powered off. Only a domain still defined here counts (a migrated one is
// undefined), only when this node serves every volume of the VM as primary
// (ours), its HA state is started, and no local operation is under way on
// it; and only after restartAfter checks in a row, within restartLimit.
func (c *computeManager) restartCrashed(ctx context.Context, drv *compute.Driver, ms *consensus.MetaState, ours func(string) bool) {
	for name, v := range ms.VMs {
		if !ours(name) || (v.HAState != "" && v.HAState != consensus.HAStarted) {
			continue
		}
		c.rmu.Lock()
		busy := c.busy[name] > 0
		c.rmu.Unlock()
		if busy {
			continue
		}
		st, err := drv.State(ctx, name)
		down := err == nil && (st == compute.StateShutOff || st == compute.StateCrashed)
		c.rmu.Lock()
		if !down || c.busy[name] > 0 {
			delete(c.down, name)
			c.rmu.Unlock()
			continue
		}
		c.down[name]++
		n := c.down[name]
		recent := c.restarts[name][:0:0]
		for _, t := range c.restarts[name] {
			if time.Since(t) < restartWindow {
				recent = append(recent, t)
			}
		}
		c.restarts[name] = recent
		if n < restartAfter {
			c.rmu.Unlock()
			continue
		}
		if len(recent) >= restartLimit {
			if n == restartAfter {
				c.log.Error("VM keeps stopping; not restarting it again for now", "vm", name, "state", st,
					"restarts", len(recent), "window", restartWindow)
				go c.d.ha.event(ctx, consensus.Event{Kind: "vm-restart-given-up", Node: c.d.cfg.NodeName, VM: name,
					Detail: fmt.Sprintf("%s again after %d restarts within %s", st, len(recent), restartWindow)})
			}
			c.rmu.Unlock()
			continue
		}
		c.restarts[name] = append(recent, time.Now())
		delete(c.down, name)
		c.busy[name]++
		c.rmu.Unlock()

		err = drv.Start(ctx, name)
		c.rmu.Lock()
		if c.busy[name]--; c.busy[name] <= 0 {
			delete(c.busy, name)
		}
		c.rmu.Unlock()
		if err != nil {
			c.log.Error("restarting a stopped VM failed", "vm", name, "was", st, "err", err)
			continue
		}
		c.log.Warn("VM stopped on its own; started it again", "vm", name, "was", st)
		go c.d.ha.event(ctx, consensus.Event{Kind: "vm-restarted", Node: c.d.cfg.NodeName, VM: name,
			Detail: fmt.Sprintf("domain was %s while it should run here", st)})
	}
}

// consoleLog is where the serial console of a VM running here is logged.
func (c *computeManager) consoleLog(name string) string {
	return filepath.Join(c.d.cfg.DataDir, "vms", name+".console.log")
}

// status reports this node's compute. Used memory counts the VMs the
// cluster records as started here, so that placement sees reservations,
// not what guests happen to touch.
func (c *computeManager) status(ctx context.Context) *tandemv1.ComputeStatus {
	cfg := c.d.cfg
	out := &tandemv1.ComputeStatus{MigrationUri: cfg.Compute.MigrationURI, NbdSocket: c.d.lay.nbdSocket(), Bridge: cfg.Compute.Bridge}
	drv, err := c.driver(ctx)
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
	if ms, err := c.d.metaLocal(); err == nil {
		out.UsedMib = usedMiB(ms, cfg.NodeName)
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

// domainSpec renders a VM for this node: every disk is this node's export.
func (c *computeManager) domainSpec(vm *tandemv1.VMInfo, nbdSocket string) compute.VMSpec {
	spec := compute.VMSpec{Name: vm.Name, UUID: vm.Uuid, VCPUs: int(vm.Vcpus), MemoryMiB: int(vm.MemoryMib),
		Kernel: vm.Kernel, Initrd: vm.Initrd, Cmdline: vm.Cmdline, SerialLog: c.consoleLog(vm.Name)}
	for i, v := range vm.Volumes {
		spec.Disks = append(spec.Disks, compute.DiskSpec{Volume: v, Socket: nbdSocket, Boot: i == 0 && vm.Kernel == ""})
	}
	for _, n := range vm.Nics {
		b := n.Bridge
		if b == "" {
			b = c.d.cfg.Compute.Bridge
		}
		spec.NICs = append(spec.NICs, compute.NICSpec{Bridge: b, MAC: n.Mac})
	}
	return spec
}

// waitPrimary waits until this node serves every volume as primary.
func (c *computeManager) waitPrimary(ctx context.Context, vols []string) error {
	vm := c.d.volumes()
	if vm == nil {
		return status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	for _, name := range vols {
		if err := vm.WaitPrimary(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (c *computeManager) vmInfo(ctx context.Context, drv *compute.Driver, vm *tandemv1.VMInfo) *tandemv1.VMInfo {
	st, err := drv.State(ctx, vm.Name)
	vm.Node = c.d.cfg.NodeName
	vm.ConsoleLog = c.consoleLog(vm.Name)
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

// Peer side.

func (s *peerService) ComputeInfo(ctx context.Context, req *tandemv1.ComputeInfoRequest) (*tandemv1.ComputeStatus, error) {
	st := s.d.compute.status(ctx)
	st.Missing = lacking(req.Paths, req.Bridges)
	return st, nil
}

// lacking names the files and network interfaces of a VM spec that this
// host does not have, so a VM is refused at create, not at its first start.
func lacking(paths, bridges []string) []string {
	var out []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", p, errors.Unwrap(err)))
		} else if !fi.Mode().IsRegular() {
			out = append(out, fmt.Sprintf("%s: not a regular file", p))
		}
	}
	for _, b := range bridges {
		if _, err := net.InterfaceByName(b); err != nil {
			out = append(out, fmt.Sprintf("bridge %s: no such network interface", b))
		}
	}
	return out
}

// VMStart defines and starts the VM here; the co-location invariant is
// checked on this node, where the replication primary lives.
func (s *peerService) VMStart(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	c := s.d.compute
	vm := req.Vm
	if vm == nil || vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	if s.d.ha.frozen() {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s fenced itself (no quorum); it runs no VM until quorum is back", s.d.cfg.NodeName)
	}
	defer c.markBusy(vm.Name)()
	drv, err := c.driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = c.waitPrimary(wctx, vm.Volumes)
	cancel()
	if err != nil {
		return nil, err
	}
	if err := drv.Define(ctx, c.domainSpec(vm, s.d.lay.nbdSocket())); err != nil {
		return nil, computeErr(err)
	}
	if st, err := drv.State(ctx, vm.Name); err != nil || st != compute.StateRunning {
		if err := drv.Start(ctx, vm.Name); err != nil {
			return nil, computeErr(err)
		}
	}
	c.log.Info("VM started", "vm", vm.Name)
	go c.announce(vm)
	return c.vmInfo(ctx, drv, vm), nil
}

func (s *peerService) VMStop(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	c := s.d.compute
	vm := req.Vm
	if vm == nil || vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	defer c.markBusy(vm.Name)()
	drv, err := c.driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	if st, err := drv.State(ctx, vm.Name); compute.IsNotFoundErr(err) || (err == nil && st != compute.StateRunning && st != compute.StatePaused) {
		return c.vmInfo(ctx, drv, vm), nil
	}
	if req.Force {
		err = drv.Destroy(ctx, vm.Name)
	} else {
		timeout := time.Duration(req.TimeoutSeconds) * time.Second
		if timeout <= 0 {
			timeout = 60 * time.Second
		}
		err = drv.Shutdown(ctx, vm.Name, timeout)
	}
	if err != nil && !compute.IsNotFoundErr(err) {
		return nil, computeErr(err)
	}
	c.log.Info("VM stopped", "vm", vm.Name, "forced", req.Force)
	return c.vmInfo(ctx, drv, vm), nil
}

func (s *peerService) VMState(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	c := s.d.compute
	if req.Vm == nil || req.Vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	defer c.markBusy(req.Vm.Name)()
	drv, err := c.driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	return c.vmInfo(ctx, drv, req.Vm), nil
}

func (s *peerService) VMUndefine(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	c := s.d.compute
	if req.Vm == nil || req.Vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	drv, err := c.driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	if st, err := drv.State(ctx, req.Vm.Name); err == nil && (st == compute.StateRunning || st == compute.StatePaused) {
		if !req.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "VM %s is %s on %s; stop it first", req.Vm.Name, st, s.d.cfg.NodeName)
		}
		if err := drv.Destroy(ctx, req.Vm.Name); err != nil {
			return nil, computeErr(err)
		}
	}
	if err := drv.Undefine(ctx, req.Vm.Name); err != nil && !compute.IsNotFoundErr(err) {
		return nil, computeErr(err)
	}
	return c.vmInfo(ctx, drv, req.Vm), nil
}

// VMConsole streams the tail of the serial console log, and follows it.
func (s *peerService) VMConsole(req *tandemv1.ConsoleRequest, stream tandemv1.Peer_VMConsoleServer) error {
	return streamConsole(stream.Context(), s.d.compute.consoleLog(req.Name), req, stream.Send)
}

func streamConsole(ctx context.Context, path string, req *tandemv1.ConsoleRequest, send func(*tandemv1.ConsoleChunk) error) error {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return status.Errorf(codes.NotFound, "VM %s has no console log on this node", req.Name)
		}
		return status.Errorf(codes.Internal, "console log: %v", err)
	}
	defer f.Close()
	tail := req.Tail
	if tail <= 0 {
		tail = 4096
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > tail {
		if _, err := f.Seek(-tail, io.SeekEnd); err != nil {
			return status.Errorf(codes.Internal, "console log: %v", err)
		}
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := send(&tandemv1.ConsoleChunk{Data: slices.Clone(buf[:n])}); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return status.Errorf(codes.Internal, "console log: %v", err)
		}
		if !req.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// metaLocal is this node's copy of the metadata (no quorum needed).
func (d *Daemon) metaLocal() (*consensus.MetaState, error) {
	_, meta, _ := d.cluster()
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster yet")
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, metaError(err)
	}
	return ms, nil
}

// announce sends gratuitous ARP and unsolicited neighbour advertisements
// for the VM's declared addresses on its bridges, as Heartbeat's IPaddr
// does after a takeover, so switches and peers learn the new port at once.
func (c *computeManager) announce(vm *tandemv1.VMInfo) {
	ctx := c.d.runCtx
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
			bridge = c.d.cfg.Compute.Bridge
		}
		if err := netannounce.Announce(ctx, bridge, mac, ips, netannounce.Options{Logger: c.log}); err != nil {
			c.log.Warn("address announcement failed", "vm", vm.Name, "bridge", bridge, "err", err)
			continue
		}
		c.log.Info("addresses announced", "vm", vm.Name, "bridge", bridge, "mac", mac, "ips", ips)
	}
}

// consoleLogOn is the console log path on another node: the same layout
// under its data dir, which holds its NBD socket.
func consoleLogOn(target *tandemv1.ComputeStatus, name string) string {
	return filepath.Join(filepath.Dir(target.NbdSocket), "vms", name+".console.log")
}
