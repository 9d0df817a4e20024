package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestVMGuestAgent (issue 18): the test guest answers the QEMU guest agent
// protocol on its virtio-serial port, through libvirt's agent socket:
// vm show lists its address, vm fsfreeze|fsthaw reach it (and the agent's
// refusal comes back), and vm stop shuts it down through the agent.
func TestVMGuestAgent(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".51"

	vc.vm(t, n1, "create", "ga", "--memory", "192M", "--disk", "64M,replicas=2", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)

	// vm show, from another node, lists the guest's address as its agent
	// reports it (the guest configures it after boot: wait for it).
	want := "eth0 " + vip + "/24"
	info := vc.waitVM(t, "ga", 2*time.Minute, func(v *tandemv1.VMInfo) bool {
		return v.Agent == "answering" && slices.Contains(v.GuestAddresses, want)
	})
	t.Logf("vm show: agent %q, addresses %q", info.Agent, info.GuestAddresses)
	out, _, err := td.CLI(ctx, n2, "vm", "show", "ga")
	if err != nil || !strings.Contains(out, "Guest addresses:") || !strings.Contains(out, want) {
		t.Fatalf("vm show table: %v\n%s", err, out)
	}

	// fsfreeze, a second freeze refused by the agent, fsthaw.
	out, stderr, err := td.CLI(ctx, n2, "vm", "fsfreeze", "ga")
	if err != nil || !strings.Contains(out, "frozen") {
		t.Fatalf("vm fsfreeze: %v\n%s%s", err, out, stderr)
	}
	t.Logf("vm fsfreeze: %s", strings.TrimSpace(out))
	if _, stderr, err := td.CLI(ctx, n2, "vm", "fsfreeze", "ga"); err == nil || !strings.Contains(stderr, "refused by the guest agent") {
		t.Fatalf("second fsfreeze: %v %q, want the agent's refusal", err, stderr)
	}
	out, stderr, err = td.CLI(ctx, n2, "vm", "fsthaw", "ga")
	if err != nil || !strings.Contains(out, "thawed (agent reports thawed)") {
		t.Fatalf("vm fsthaw: %v\n%s%s", err, out, stderr)
	}

	// The channel follows a live migration: the target's libvirt makes its
	// own socket and the agent answers there. The target is the disk's
	// other replica, wherever placement put it.
	to := n2
	if replicaState(volumeCmd(t, ctx, td, n1, "show", "ga-disk0"), n2.Name).Node == "" {
		to = n3
	}
	vc.migrateLive(t, n3, "ga", n1, to)
	info = vc.waitVM(t, "ga", 2*time.Minute, func(v *tandemv1.VMInfo) bool {
		return v.Node == to.Name && v.Agent == "answering" && slices.Contains(v.GuestAddresses, want)
	})
	t.Logf("after migration to %s: agent %q, addresses %q", info.Node, info.Agent, info.GuestAddresses)

	// vm stop goes through the agent (the test guest has no ACPI handler:
	// only the agent can shut it down cleanly).
	stopped := vc.vm(t, n3, "stop", "ga", "--timeout", "2m")
	if stopped.StoppedBy != "agent" || stopped.State != "shut-off" {
		t.Fatalf("vm stop: stopped by %q, state %q; want agent, shut-off", stopped.StoppedBy, stopped.State)
	}
	if con, _, err := td.CLI(ctx, n1, "vm", "console", "ga", "--tail", "65536"); err != nil || !strings.Contains(con, "guest-shutdown") {
		t.Fatalf("console after the agent's shutdown: %v\n%s", err, clip(con, 2000))
	}

	// A stopped VM has no agent: show says nothing of it, fsfreeze is refused.
	if v := vc.vm(t, n1, "show", "ga"); v.Agent != "" || len(v.GuestAddresses) != 0 {
		t.Fatalf("stopped VM shows agent %q addresses %q", v.Agent, v.GuestAddresses)
	}
	if _, stderr, err := td.CLI(ctx, n1, "vm", "fsfreeze", "ga"); err == nil || !strings.Contains(stderr, "not running") {
		t.Fatalf("fsfreeze of a stopped VM: %v %q", err, stderr)
	}

	// A guest without an agent: vm show says so, and vm stop falls back to
	// the ACPI power button, which this guest ignores, then destroys it
	// after the timeout.
	vc.vm(t, n1, "create", "nq", "--memory", "128M", "--disk", "16M", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.img.Cmdline(guest.Config{Extra: "tandem.qga=off"}), "--start")
	info = vc.waitVM(t, "nq", time.Minute, func(v *tandemv1.VMInfo) bool { return v.State == "running" })
	if !strings.HasPrefix(info.Agent, "not answering") || len(info.GuestAddresses) != 0 {
		t.Fatalf("VM without an agent: agent %q, addresses %q", info.Agent, info.GuestAddresses)
	}
	out, _, err = td.CLI(ctx, n2, "vm", "show", "nq")
	if err != nil || !strings.Contains(out, "Guest agent:") || !strings.Contains(out, "not answering") {
		t.Fatalf("vm show of a VM without an agent: %v\n%s", err, out)
	}
	if _, stderr, err := td.CLI(ctx, n2, "vm", "fsfreeze", "nq"); err == nil || !strings.Contains(stderr, "no guest agent answered") {
		t.Fatalf("fsfreeze without an agent: %v %q", err, stderr)
	}
	stopped = vc.vm(t, n2, "stop", "nq", "--timeout", "3s")
	if stopped.StoppedBy != "destroy" || stopped.State != "shut-off" {
		t.Fatalf("vm stop without an agent: stopped by %q, state %q; want destroy, shut-off", stopped.StoppedBy, stopped.State)
	}
}
