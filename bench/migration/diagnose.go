package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	// pokeWait is how long the stream may take to resume after a poke.
	pokeWait = 5 * time.Second
	// consoleLines is how much of the guest's serial logs a diagnosis keeps.
	consoleLines = 40
)

// guestStream is a guest's heartbeat receiver and the socket under it.
type guestStream struct {
	rx   *guest.Receiver
	conn *net.UDPConn
	ip   string // the guest's address on the VM network
}

// Diagnosis is what the benchmark found out about a guest that stopped
// sending after a migration.
type Diagnosis struct {
	// SilentSinceMs is when the last datagram arrived, relative to the
	// start of the migration command.
	SilentSinceMs float64 `json:"silent_since_ms"`
	LastSeq       uint64  `json:"last_seq"`
	LastAcked     uint64  `json:"last_acked"`
	VMNode        string  `json:"vm_node"`
	VMState       string  `json:"vm_state"`
	// DomState, CPUs and LAPIC are virsh domstate --reason and the QEMU
	// monitor's "info cpus" and "info lapic" on the VM's node.
	DomState string `json:"domstate,omitempty"`
	CPUs     string `json:"info_cpus,omitempty"`
	LAPIC    string `json:"info_lapic,omitempty"`
	// Consoles holds the tail of the guest's serial log on every node
	// (each node's QEMU writes its own file).
	Consoles map[string]string `json:"console_tails,omitempty"`
	// Poked: datagrams were sent to the guest (an ARP request and packets
	// it receives, i.e. interrupts), and ResumedAfterPoke says whether its
	// stream came back within pokeWait after that.
	Poked            bool `json:"poked"`
	ResumedAfterPoke bool `json:"resumed_after_poke"`
	// After a reboot of a guest with a disk: the counter the new boot read
	// from its disk (from its console) and whether it is at least LastAcked,
	// the last one the old boot had acknowledged (I2).
	DiskCounterAtBoot *uint64  `json:"disk_counter_at_boot,omitempty"`
	Durable           *bool    `json:"durable,omitempty"`
	Errors            []string `json:"errors,omitempty"`
}

// diagnose inspects a guest whose stream stopped or that rebooted: where
// libvirt says it runs, its vCPU and local APIC state, its serial consoles,
// and (with poke) whether network interrupts wake it.
func (b *bench) diagnose(ctx context.Context, gs guestStream, vm string, t0 time.Time, poke bool) *Diagnosis {
	d := &Diagnosis{}
	if last, at, ok := gs.rx.Last(); ok {
		d.SilentSinceMs, d.LastSeq, d.LastAcked = benchkit.MS(at.Sub(t0)), last.Seq, last.Acked
	}
	vctx, cancel := context.WithTimeout(ctx, cliTimeout)
	out, _, err := b.cli(vctx, b.c.Nodes[0], "vm", "show", vm, "--output", "json")
	cancel()
	var info tandemv1.VMInfo
	if err == nil {
		err = adminclient.UnmarshalJSON([]byte(out), &info)
	}
	if err != nil {
		d.Errors = append(d.Errors, fmt.Sprintf("vm show: %v", err))
	}
	d.VMNode, d.VMState = info.GetNode(), info.GetState()
	if lv := b.env.Libvirtd(d.VMNode); lv != nil {
		uri := "qemu+unix:///system?socket=" + lv.Socket
		virsh := func(args ...string) string {
			vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			out, err := exec.CommandContext(vctx, "virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
			s := strings.TrimSpace(string(out))
			if err != nil {
				d.Errors = append(d.Errors, fmt.Sprintf("virsh %s: %v: %s", strings.Join(args, " "), err, s))
			}
			return s
		}
		d.DomState = virsh("domstate", vm, "--reason")
		d.CPUs = virsh("qemu-monitor-command", vm, "--hmp", "info cpus")
		d.LAPIC = virsh("qemu-monitor-command", vm, "--hmp", "info lapic")
	}
	d.Consoles = b.consoleTails(vm, consoleLines)
	if !poke {
		return d
	}

	// Poke: anything addressed to the guest makes the switch ARP for it
	// (a broadcast the guest receives) and then delivers the datagrams.
	skip := received(gs.rx)
	dst := &net.UDPAddr{IP: net.ParseIP(gs.ip), Port: 9}
	for range 3 {
		if _, err := gs.conn.WriteToUDP([]byte("wake up"), dst); err != nil {
			d.Errors = append(d.Errors, fmt.Sprintf("poke: %v", err))
			break
		}
		d.Poked = true
		if ctxtime.Sleep(ctx, 200*time.Millisecond) != nil {
			return d
		}
	}
	wctx, cancel := context.WithTimeout(ctx, pokeWait)
	_, err = waitAfter(wctx, gs.rx, skip, anyDatagram)
	cancel()
	d.ResumedAfterPoke = err == nil
	return d
}

// consoleTails reads the last lines of the guest's serial log on every node
// that has one.
func (b *bench) consoleTails(vm string, lines int) map[string]string {
	out := map[string]string{}
	for _, n := range b.c.Nodes {
		if data, err := os.ReadFile(b.env.ConsoleLog(n, vm)); err == nil {
			out[n.Name] = vmbench.TailLines(string(data), lines)
		}
	}
	return out
}

// diskCounterAtBoot finds, in the guest's consoles, the counter the agent
// read from its disk when it started boot number boot.
func diskCounterAtBoot(consoles map[string]string, boot uint64) (uint64, bool) {
	for _, text := range consoles {
		if c, ok := vmbench.DiskCounter(text, boot); ok {
			return c, true
		}
	}
	return 0, false
}
