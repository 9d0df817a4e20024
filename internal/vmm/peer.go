package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// The node side of the VM calls: what the node running a VM does when the
// deciding node (or HA recovery) asks it over the peer API.

// ComputeInfo is this node's compute status, with what it lacks of the
// files, bridges and CPU models req names.
func (m *Manager) ComputeInfo(ctx context.Context, req *tandemv1.ComputeInfoRequest) *tandemv1.ComputeStatus {
	st := m.status(ctx)
	st.Missing = lacking(req.Paths, req.Bridges)
	if len(req.CpuModels) > 0 && st.Available {
		st.CpuModelProblems = m.cpuModelProblems(ctx, req.CpuModels)
	}
	return st
}

// cpuModelProblems says which of models libvirt here does not know or
// cannot provide (compute.CPUModelProblem). When libvirt cannot say, the
// problem is that: a model is accepted only where it was checked.
func (m *Manager) cpuModelProblems(ctx context.Context, models []string) []string {
	drv, err := m.Driver(ctx)
	if err != nil {
		return []string{fmt.Sprintf("cpu models cannot be checked: %v", err)}
	}
	known, usable, err := drv.CPUModels(ctx, compute.MachineQ35)
	if err != nil {
		return []string{fmt.Sprintf("cpu models cannot be checked: %v", err)}
	}
	var out []string
	for _, model := range models {
		if p := compute.CPUModelProblem(model, known, usable); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// lacking names the files and network interfaces of a VM spec that this
// host does not have, so a VM is refused at create, not at its first start.
func lacking(paths, bridges []string) []string {
	var out []string
	for _, p := range paths {
		if err := validate.RegularFile("file", p); err != nil {
			if errors.Is(err, validate.ErrInvalid) {
				out = append(out, validate.Message(err))
			} else {
				out = append(out, fmt.Sprintf("%s: %v", p, rootCause(err)))
			}
		}
	}
	for _, b := range bridges {
		if _, err := net.InterfaceByName(b); err != nil {
			out = append(out, fmt.Sprintf("bridge %s: no such network interface", b))
		}
	}
	return out
}

// rootCause is the innermost error: "no such file or directory".
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// VMStart defines and starts the VM here; the co-location invariant is
// checked on this node, where the replication primary lives.
func (m *Manager) VMStart(ctx context.Context, vm *tandemv1.VMInfo) (*tandemv1.VMInfo, error) {
	if vm == nil || vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	if m.st.Fence.Fenced() {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s fenced itself (no quorum); it runs no VM until quorum is back", m.self())
	}
	// Checked at create on every node, checked again here: the file may
	// have changed since, and QEMU would hang on a FIFO or read a device.
	for what, p := range map[string]string{"kernel": vm.Kernel, "initrd": vm.Initrd} {
		if p == "" {
			continue
		}
		if err := validate.RegularFile(what, p); err != nil {
			if errors.Is(err, validate.ErrInvalid) {
				return nil, status.Errorf(codes.InvalidArgument, "node %s: %s", m.self(), validate.Message(err))
			}
			return nil, status.Errorf(codes.FailedPrecondition, "node %s: %v", m.self(), err)
		}
	}
	drv, done, err := m.busyDriver(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer done()
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = m.waitPrimary(wctx, replicated(ms, vm.Volumes))
	cancel()
	if err != nil {
		return nil, err
	}
	// RBD disks: this node owns them and QEMU opens them (rbd.go); the
	// secret defined for them stays until QEMU has started.
	m.secmu.Lock()
	defer m.secmu.Unlock()
	if err := m.attachRBD(ctx, drv, ms, vm.Volumes); err != nil {
		return nil, err
	}
	// The image is verified (and fetched if this node lacks it) before
	// QEMU opens it.
	cdrom, err := m.localImage(ctx, vm.Cdrom)
	if err != nil {
		return nil, err
	}
	nvram, err := m.prepareNVRAM(ctx, drv, vm)
	if err != nil {
		return nil, err
	}
	// The cloud-init seed, built here from the record (cloudinit.go).
	seed, err := m.prepareSeed(ctx, drv, ms, vm)
	if err != nil {
		return nil, err
	}
	spec := m.domainSpec(vm, m.vols.NBDSocket(), cdrom, nvram, seed)
	if err := m.withRBD(ms, &spec); err != nil {
		return nil, err
	}
	if err := drv.Define(ctx, spec); err != nil {
		return nil, computeErr(err)
	}
	if st, err := drv.State(ctx, vm.Name); err != nil || st != compute.StateRunning {
		if err := drv.Start(ctx, vm.Name); err != nil {
			return nil, computeErr(err)
		}
	}
	m.log.Info("VM started", "vm", vm.Name)
	go m.announce(vm)
	return m.vmInfo(ctx, drv, vm), nil
}

// VMStop shuts the VM down here (destroys it with force).
func (m *Manager) VMStop(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	vm := req.Vm
	drv, done, err := m.busyDriver(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer done()
	if st, err := drv.State(ctx, vm.Name); compute.IsNotFoundErr(err) || (err == nil && st != compute.StateRunning && st != compute.StatePaused) {
		return m.vmInfo(ctx, drv, vm), nil
	}
	how := compute.StoppedByDestroy
	if req.Force {
		err = drv.Destroy(ctx, vm.Name)
	} else {
		timeout := time.Duration(req.TimeoutSeconds) * time.Second
		if timeout <= 0 {
			timeout = 60 * time.Second
		}
		// The guest agent first, then ACPI, destroyed after timeout.
		how, err = drv.StopGuest(ctx, vm.Name, timeout)
	}
	if err != nil && !compute.IsNotFoundErr(err) {
		return nil, computeErr(err)
	}
	m.log.Info("VM stopped", "vm", vm.Name, "forced", req.Force, "by", how)
	out := m.vmInfo(ctx, drv, vm)
	out.StoppedBy = how
	return out, nil
}

// VMState is the VM as libvirt reports it here.
func (m *Manager) VMState(ctx context.Context, vm *tandemv1.VMInfo) (*tandemv1.VMInfo, error) {
	drv, done, err := m.busyDriver(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer done()
	return m.vmInfo(ctx, drv, vm), nil
}

// VMUndefine removes the VM's domain here; a running one only with force.
func (m *Manager) VMUndefine(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	if req.Vm == nil || req.Vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	drv, err := m.Driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	if st, err := drv.State(ctx, req.Vm.Name); err == nil && (st == compute.StateRunning || st == compute.StatePaused) {
		if !req.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "VM %s is %s on %s; stop it first", req.Vm.Name, st, m.self())
		}
		if err := drv.Destroy(ctx, req.Vm.Name); err != nil {
			return nil, computeErr(err)
		}
	}
	if err := drv.Undefine(ctx, req.Vm.Name); err != nil && !compute.IsNotFoundErr(err) {
		return nil, computeErr(err)
	}
	m.dropSeed(req.Vm.Name)
	return m.vmInfo(ctx, drv, req.Vm), nil
}

// VMConsole streams the tail of the serial console log kept here, and
// follows it.
func (m *Manager) VMConsole(ctx context.Context, req *tandemv1.ConsoleRequest, send func(*tandemv1.ConsoleChunk) error) error {
	return streamConsole(ctx, m.consoleLog(req.Name), req, send)
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

// localImage is the path of this node's verified copy of image name, ""
// for none.
func (m *Manager) localImage(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	if m.imgs == nil {
		return "", status.Errorf(codes.FailedPrecondition, "node %s keeps no images", m.self())
	}
	p, err := m.imgs.Local(ctx, name)
	if err != nil {
		return "", status.Errorf(status.Code(err), "node %s: CD-ROM image %s: %s", m.self(), name, grpcMessage(err))
	}
	return p, nil
}

// VMChangeMedia puts image into the CD-ROM drive of a VM defined here
// ("" ejects); a running VM sees it at once.
func (m *Manager) VMChangeMedia(ctx context.Context, vm *tandemv1.VMInfo, image string) (*tandemv1.VMInfo, error) {
	drv, done, err := m.busyDriver(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer done()
	path, err := m.localImage(ctx, image)
	if err != nil {
		return nil, err
	}
	if err := drv.ChangeMedia(ctx, vm.Name, path); err != nil {
		if compute.IsNotFoundErr(err) {
			return m.vmInfo(ctx, drv, vm), nil // not defined here: the next start defines it so
		}
		return nil, computeErr(err)
	}
	vm.Cdrom = image
	return m.vmInfo(ctx, drv, vm), nil
}

// busyDriver is this node's driver for a call on vm, which it marks busy
// until done is called.
func (m *Manager) busyDriver(ctx context.Context, vm *tandemv1.VMInfo) (drv *compute.Driver, done func(), err error) {
	if vm == nil || vm.Name == "" {
		return nil, nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	done = m.crash.markBusy(vm.Name)
	drv, err = m.Driver(ctx)
	if err != nil {
		done()
		return nil, nil, computeErr(err)
	}
	return drv, done, nil
}
