package vmm

import (
	"context"
	"fmt"

	"github.com/tandemhci/tandem/compute"
)

// accelChoice is the libvirt domain type this node's VMs get, and why.
type accelChoice struct {
	typ    string // "kvm" or "qemu" (TCG)
	detail string
}

// domainType resolves compute.domain_type: "qemu" and "kvm" as set;
// "auto" (the default) runs the KVM probe once (compute.ProbeKVM: a real
// kernel must boot to its end under KVM) and picks kvm only if it did. It
// holds accelMu while probing, so the first VM start waits for the
// probe (bounded by its timeout) rather than guess.
func (m *Manager) domainType(ctx context.Context) *accelChoice {
	m.accelMu.Lock()
	defer m.accelMu.Unlock()
	if m.accel != nil {
		return m.accel
	}
	cfg := m.st.Config.Compute
	switch cfg.DomainType {
	case "qemu", "kvm":
		m.accel = &accelChoice{typ: cfg.DomainType, detail: "compute.domain_type: " + cfg.DomainType}
		return m.accel
	}
	r := compute.ProbeKVM(ctx, compute.KVMProbe{Kernel: cfg.KVMProbeKernel})
	if ctx.Err() != nil {
		// Interrupted: decide nothing for good, run this start under TCG.
		return &accelChoice{typ: compute.DefaultDomainType, detail: fmt.Sprintf("KVM probe interrupted (%v): TCG for now", ctx.Err())}
	}
	if r.Usable {
		m.accel = &accelChoice{typ: "kvm", detail: "KVM: " + r.Detail}
		m.log.Info("KVM works here: VMs run under KVM", "probe", r.Detail)
	} else {
		m.accel = &accelChoice{typ: compute.DefaultDomainType, detail: "TCG (no KVM): " + r.Detail}
		m.log.Warn("KVM is not usable here: VMs run under TCG, much slower; set compute.domain_type to qemu to skip the probe", "probe", r.Detail)
	}
	return m.accel
}

// resolvedAccel is the choice made so far, nil before the first.
func (m *Manager) resolvedAccel() *accelChoice {
	m.accelMu.Lock()
	defer m.accelMu.Unlock()
	return m.accel
}
