package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// VM settings of the runner (Config.VMs).
const (
	// vmCapacityMiB is the memory each node offers VMs, as in the e2e
	// tests: room for every VM of a schedule on any one node (N+1).
	vmCapacityMiB = 512
	// vmDisk is each VM's own disk: a new 3-replica volume, so every node
	// may run the VM and be a migration target.
	vmDisk = "16M,replicas=3"
	// guestPort is the first UDP port on the switch receiving the guests'
	// heartbeats (VM i sends to guestPort+i).
	guestPort = 9990
	// guestRate is the guests' datagrams per second, and guestWrite the
	// pause between their disk counter writes: enough to see progress,
	// light on a 2-CPU machine.
	guestRate  = 20
	guestWrite = 50 * time.Millisecond
	// guestBoot bounds a VM's creation and first boot (TCG).
	guestBoot = 3 * time.Minute
	// migrateTimeout bounds a Migrate action.
	migrateTimeout = 60 * time.Second
	// sampleEvery is how often every node's libvirtd is asked which
	// domains run there.
	sampleEvery = 300 * time.Millisecond
	// watchdogAfter is the harness's stand-in for the hardware watchdog
	// (§5.2): a node whose tandemd has not run (killed or stopped) for the
	// self-fence lease (ha default 4s) loses its QEMUs, as a watchdog
	// reset would take them. The harness has no /dev/watchdog.
	watchdogAfter = 4 * time.Second
)

// vmSpec is one VM of a schedule: the test guest (internal/guest) on its
// own replicated volume, HA on (the cluster's default).
type vmSpec struct {
	name string
	vol  string // its disk volume
	ip   string
	rx   *guest.Receiver
	stop func() error // stops rx
}

// vmNames are the names of the schedule's VMs.
func (r *Runner) vmNames() []string {
	var out []string
	for _, v := range r.vms {
		out = append(out, v.name)
	}
	return out
}

// ensureLibvirtd starts libvirtd on node i unless it runs (Config.VMs).
func (r *Runner) ensureLibvirtd(ctx context.Context, i int) error {
	if r.cfg.VMs == 0 {
		return nil
	}
	r.mu.Lock()
	lv := r.lvs[i]
	r.mu.Unlock()
	if lv != nil && lv.Proc.Alive() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	lv, err := r.c.StartLibvirtd(sctx, r.c.Nodes[i])
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.lvs[i] = lv
	r.mu.Unlock()
	return nil
}

// killLibvirtd SIGKILLs libvirtd on node i (not its process group: its
// QEMUs live on, as when libvirtd crashes) and waits for it to be gone.
func (r *Runner) killLibvirtd(ctx context.Context, i int) bool {
	r.mu.Lock()
	lv := r.lvs[i]
	r.mu.Unlock()
	if lv == nil || !lv.Proc.Alive() {
		return false
	}
	_ = unix.Kill(lv.Proc.PID(), syscall.SIGKILL)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = lv.Proc.Wait(wctx)
	return true
}

// qemuProc is a QEMU process libvirt started for a domain, and the index
// of the node whose namespace it runs in (-1: none of the cluster's).
type qemuProc struct {
	pid    int
	domain string
	node   int
}

// nsInode is the inode of a named network namespace (/run/netns/NAME),
// which /proc/PID/ns/net names as "net:[INODE]".
func nsInode(ns string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", ns), &st); err != nil {
		return 0, fmt.Errorf("netns %s: %w", ns, err)
	}
	return st.Ino, nil
}

// qemuProcs lists the QEMU processes of the domains match accepts, on any
// node of the cluster, from /proc.
func (r *Runner) qemuProcs(match func(string) bool) []qemuProc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []qemuProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		dom, ok := compute.QEMUDomain(b)
		if !ok || !match(dom) {
			continue
		}
		p := qemuProc{pid: pid, domain: dom, node: -1}
		if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil {
			for i, ino := range r.nsInodes {
				if link == fmt.Sprintf("net:[%d]", ino) {
					p.node = i
				}
			}
		}
		out = append(out, p)
	}
	return out
}

// killQEMU SIGKILLs the QEMU processes of the domains match accepts, on
// node (or on any node when node < 0), and reports what it killed.
func (r *Runner) killQEMU(match func(string) bool, node int) []qemuProc {
	var killed []qemuProc
	for _, p := range r.qemuProcs(match) {
		if p.node < 0 || (node >= 0 && p.node != node) {
			continue
		}
		if err := unix.Kill(p.pid, syscall.SIGKILL); err == nil {
			killed = append(killed, p)
		}
	}
	return killed
}

func (r *Runner) ourVM(dom string) bool { return slices.Contains(r.vmNames(), dom) }

// cliFor is cli with a longer timeout, for actions that take a while (a
// migration, a VM's creation). A refusal is the answer: it stops there
// rather than ask the next node, which would repeat the action.
func (r *Runner) cliFor(ctx context.Context, d time.Duration, args ...string) (string, error) {
	return r.cliVia(ctx, d, true, args...)
}

func (r *Runner) showVM(ctx context.Context, name string) (*tandemv1.VMInfo, error) {
	var info tandemv1.VMInfo
	return &info, r.showJSON(ctx, &info, "vm", "show", name)
}

// createVMs creates and starts the schedule's VMs (Config.VMs), each on
// its own new 3-replica volume, first hosts rotated between schedules, and
// waits until each guest acknowledges disk writes.
func (r *Runner) createVMs(ctx context.Context, seed uint64) error {
	r.vms = nil
	prefix := strings.TrimSuffix(r.c.ReceiverIP, ".1")
	for i := range r.cfg.VMs {
		v := &vmSpec{name: fmt.Sprintf("s%d-vm%d", seed, i), ip: fmt.Sprintf("%s.%d", prefix, 50+i)}
		v.rx = guest.NewReceiver(r.guestConns[i], nil)
		v.stop = v.rx.Start(ctx)
		r.vms = append(r.vms, v)
		node := r.c.Nodes[(int(seed)+i)%len(r.c.Nodes)]
		cmdline := r.img.Cmdline(guest.Config{IP: v.ip + "/24", UDP: fmt.Sprintf("%s:%d", r.c.ReceiverIP, guestPort+i),
			Rate: guestRate, Disk: "/dev/vda", WriteInterval: guestWrite})
		if _, err := r.cliFor(ctx, guestBoot, "vm", "create", v.name, "--memory", r.cfg.VMMemory, "--disk", vmDisk, "--node", node.Name,
			"--kernel", r.img.Kernel, "--initrd", r.img.Initrd, "--cmdline", cmdline, "--nic", r.c.VMBridge+",ip="+v.ip, "--start"); err != nil {
			return fmt.Errorf("vm create %s: %w", v.name, err)
		}
		info, err := r.showVM(ctx, v.name)
		if err != nil {
			return err
		}
		if len(info.GetVolumes()) != 1 {
			return fmt.Errorf("vm %s has volumes %v, want one", v.name, info.GetVolumes())
		}
		v.vol = info.GetVolumes()[0]
	}
	for _, v := range r.vms {
		wctx, cancel := context.WithTimeout(ctx, guestBoot)
		_, err := v.rx.WaitFor(wctx, func(d guest.Datagram) bool { return d.Acked > 5 })
		cancel()
		if err != nil {
			return fmt.Errorf("guest %s did not come up: %w", v.name, err)
		}
		if _, ok := r.waitSynced(ctx, v.vol, r.cfg.Bound); !ok {
			return fmt.Errorf("the disk %s of %s not in sync within %s", v.vol, v.name, r.cfg.Bound)
		}
	}
	return nil
}

// deleteVMs deletes the schedule's VMs with their volumes and stops their
// receivers.
func (r *Runner) deleteVMs(ctx context.Context) {
	for _, v := range r.vms {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := r.cliFor(ctx, 30*time.Second, "vm", "delete", v.name, "--force", "--volumes")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.log.Warn("chaos: VM left behind", "vm", v.name, "err", err)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		_ = v.stop()
	}
	// A VM left behind must not run into the next schedule.
	if len(r.vms) > 0 {
		r.killQEMU(r.ourVM, -1)
	}
	r.vms = nil
}

// migrate live-migrates the fault's VM to the fault's node or, when the
// cluster records the VM there already, to the next node (a migration to
// where it runs would only be refused).
func (r *Runner) migrate(ctx context.Context, f Fault) bool {
	if f.VM >= len(r.vms) {
		return false
	}
	name, to := r.vms[f.VM].name, r.c.Nodes[f.Node].Name
	if info, err := r.showVM(ctx, name); err == nil && info.GetNode() == to {
		to = r.c.Nodes[(f.Node+1)%len(r.c.Nodes)].Name
	}
	out, err := r.cliFor(ctx, migrateTimeout, "vm", "migrate", name, "--to", to)
	if err != nil {
		r.log.Info("chaos: migrate refused", "fault", f.String(), "to", to, "err", err)
		return false
	}
	r.log.Info("chaos: migrated", "fault", f.String(), "to", to, "out", strings.TrimSpace(out))
	return true
}

// sampler asks every node's libvirtd which of the schedule's VMs run there,
// every sampleEvery, into DomainSamples for CheckVMs.
type sampler struct {
	ours   []string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []DomainSample
	latest  map[string][]DomainSample // node -> its last round (nil: it failed)
}

func (r *Runner) startSampler(ctx context.Context) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{ours: r.vmNames(), cancel: cancel, latest: map[string][]DomainSample{}}
	for i, n := range r.c.Nodes {
		sock := filepath.Join(n.Dir, "libvirt", "sock", "libvirt-sock")
		r.mu.Lock()
		if lv := r.lvs[i]; lv != nil {
			sock = lv.Socket
		}
		r.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx, n.Name, sock)
		}()
	}
	return s
}

// stop ends the sampling and returns every sample.
func (s *sampler) stop() []DomainSample {
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // a call stuck on a hung libvirtd
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DomainSample(nil), s.samples...)
}

// final is where each VM runs according to every node's latest round, and
// whether every node's latest round succeeded after since.
func (s *sampler) final(since time.Time, nodes int) (map[string][]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	complete := len(s.latest) == nodes
	for _, round := range s.latest {
		if round == nil || round[0].Before.Before(since) {
			complete = false
			continue
		}
		for _, d := range round {
			if d.Running {
				out[d.Domain] = append(out[d.Domain], d.Node)
			}
		}
	}
	for _, ns := range out {
		slices.Sort(ns)
	}
	return out, complete
}

func (s *sampler) run(ctx context.Context, node, sock string) {
	var l *libvirt.Libvirt
	defer func() {
		if l != nil {
			_ = l.Disconnect()
		}
	}()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		before := time.Now()
		if l == nil {
			c := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(time.Second)))
			if err := c.ConnectToURI(libvirt.QEMUSystem); err == nil {
				l = c
			}
		}
		var round []DomainSample
		if l != nil {
			active, states, err := listActive(l)
			if err != nil {
				_ = l.Disconnect()
				l = nil
			} else {
				round = domainSamples(node, active, states, s.ours, before, time.Now())
			}
		}
		s.mu.Lock()
		if round == nil {
			// Unknown: a sample saying "not running" breaks any span
			// CheckVMs would draw across the gap (a restarted libvirtd
			// may give a new QEMU the old ID), and claims nothing else.
			for _, vm := range s.ours {
				s.samples = append(s.samples, DomainSample{Node: node, Domain: vm, ID: -1, Before: before, After: time.Now()})
			}
			s.latest[node] = nil
		} else {
			s.samples = append(s.samples, round...)
			s.latest[node] = round
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// listActive lists a libvirtd's active domains and their states.
func listActive(l *libvirt.Libvirt) ([]libvirt.Domain, map[string]libvirt.DomainState, error) {
	doms, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
	if err != nil {
		return nil, nil, err
	}
	states := map[string]libvirt.DomainState{}
	for _, d := range doms {
		st, _, err := l.DomainGetState(d, 0)
		if err != nil {
			if libvirt.IsNotFound(err) {
				continue // gone while we listed
			}
			return nil, nil, err
		}
		states[d.Name] = libvirt.DomainState(st)
	}
	return doms, states, nil
}

// domainSamples turns one look at a node's active domains into one sample
// per VM of ours: running (libvirt's "running" state, with the domain's
// ID) or not (absent, paused as an incoming migration is, shut off).
func domainSamples(node string, active []libvirt.Domain, states map[string]libvirt.DomainState, ours []string, before, after time.Time) []DomainSample {
	out := make([]DomainSample, 0, len(ours))
	for _, vm := range ours {
		s := DomainSample{Node: node, Domain: vm, ID: -1, Before: before, After: after}
		for _, d := range active {
			if st, ok := states[d.Name]; ok && d.Name == vm && st == libvirt.DomainRunning {
				s.Running, s.ID = true, int(d.ID)
			}
		}
		out = append(out, s)
	}
	return out
}

// openGuestConns opens the UDP sockets on the switch that the guests'
// heartbeats reach (one per VM, kept for every schedule).
func (r *Runner) openGuestConns() error {
	for i := range r.cfg.VMs {
		conn, err := r.c.ListenUDPOnSwitch(fmt.Sprintf("%s:%d", r.c.ReceiverIP, guestPort+i))
		if err != nil {
			return err
		}
		r.guestConns = append(r.guestConns, conn)
	}
	return nil
}

// VMObs is what the runner saw of one VM after healing.
type VMObs struct {
	VM string
	// Progress is whether the guest reported a disk counter beyond every
	// one it had reported before healing, within the bound.
	Progress bool
	Waited   time.Duration
	// Before is the highest counter reported before healing.
	Before uint64
	// GivenUp: tandem had given up restarting the VM on its node (event
	// vm-restart-given-up: its QEMU stopped more than 3 times in 10
	// minutes, the documented limit), so the runner started it as the
	// operator would (`tandem vm start`).
	GivenUp bool
	// Record is the cluster's record of the VM when it failed the check
	// (`vm show`: node, state, HA state), for the report.
	Record string
}

// vmsAfterHeal waits, within the bound, until every VM runs on exactly one
// node by every libvirtd and its guest acknowledges a disk write it had
// not before; it returns the final placement and what it saw.
func (r *Runner) vmsAfterHeal(ctx context.Context, s *sampler) (map[string][]string, []VMObs) {
	healed := time.Now()
	marks := map[string]uint64{}
	for _, v := range r.vms {
		for _, a := range v.rx.Arrivals() {
			marks[v.name] = max(marks[v.name], a.Acked)
		}
	}
	var final map[string][]string
	obs := make([]VMObs, len(r.vms))
	for i, v := range r.vms {
		obs[i] = VMObs{VM: v.name, Before: marks[v.name]}
	}
	for {
		var complete bool
		final, complete = s.final(healed, len(r.c.Nodes))
		done := complete
		for i, v := range r.vms {
			if complete && len(final[v.name]) == 0 && !obs[i].GivenUp && time.Since(healed) > 5*time.Second && r.restartGivenUp(ctx, v.name) {
				// The documented limit, not a fault of its own: do what
				// the event asks of the operator, once.
				obs[i].GivenUp = true
				out, err := r.cliFor(ctx, guestBoot, "vm", "start", v.name)
				r.log.Warn("chaos: tandem gave up restarting the VM (vm-restart-given-up); started it as an operator would", "vm", v.name, "out", out, "err", err)
			}
			if !obs[i].Progress {
				for _, a := range v.rx.Arrivals() {
					if a.At.After(healed) && a.Acked > marks[v.name] {
						obs[i].Progress, obs[i].Waited = true, time.Since(healed)
						break
					}
				}
			}
			if !obs[i].Progress || len(final[v.name]) != 1 {
				done = false
			}
		}
		if done || time.Since(healed) > r.cfg.Bound || ctx.Err() != nil {
			break
		}
		time.Sleep(sampleEvery)
	}
	for i, v := range r.vms {
		if !obs[i].Progress {
			obs[i].Waited = time.Since(healed)
		}
		if !obs[i].Progress || len(final[v.name]) != 1 {
			if info, err := r.showVM(ctx, v.name); err == nil {
				obs[i].Record = fmt.Sprintf("node %s, desired %s, state %s, HA state %s", info.GetNode(), info.GetDesired(), info.GetState(), info.GetHaState())
			} else {
				obs[i].Record = err.Error()
			}
			r.log.Warn("chaos: VM not back after healing", "vm", v.name, "record", obs[i].Record, "runs_on", final[v.name])
		}
	}
	return final, obs
}

// restartGivenUp reports whether the event log holds vm-restart-given-up
// for vm (each schedule's VM has a name of its own).
func (r *Runner) restartGivenUp(ctx context.Context, vm string) bool {
	out, err := r.cli(ctx, "events", "--output", "json", "--tail", "500")
	if err != nil {
		return false
	}
	evs, err := decodeEvents([]byte(out))
	if err != nil {
		r.log.Warn("chaos: events", "err", err)
	}
	for _, e := range evs {
		if e.GetKind() == "vm-restart-given-up" && e.GetVm() == vm {
			return true
		}
	}
	return false
}

// decodeEvents decodes the concatenated JSON objects of `tandem events
// --output json`.
func decodeEvents(out []byte) ([]*tandemv1.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	var evs []*tandemv1.Event
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return evs, nil
		} else if err != nil {
			return evs, err
		}
		var ev tandemv1.Event
		if err := adminclient.UnmarshalJSON(raw, &ev); err != nil {
			return evs, err
		}
		evs = append(evs, &ev)
	}
}

// CheckVMProgress: after healing, every VM's guest acknowledges a disk
// write beyond those it had before, within the bound.
func CheckVMProgress(obs []VMObs) []Anomaly {
	var out []Anomaly
	for _, o := range obs {
		if !o.Progress {
			d := fmt.Sprintf("VM %s acknowledged no disk write beyond counter %d within %s after healing", o.VM, o.Before, o.Waited.Round(time.Second))
			if o.Record != "" {
				d += " (record: " + o.Record + ")"
			}
			out = append(out, Anomaly{Checker: "vm", Detail: d})
		}
	}
	return out
}

// watchdog stands in for the hardware watchdog while a schedule runs: a
// node whose tandemd has not been running for watchdogAfter loses its VMs'
// QEMUs (see watchdogAfter). It returns a stop function.
func (m *nemesis) watchdog(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			m.mu.Lock()
			for i, since := range m.down {
				if m.fired[i] || time.Since(since) < watchdogAfter {
					continue
				}
				m.fired[i] = true
				if killed := m.r.killQEMU(m.r.ourVM, i); len(killed) > 0 {
					m.watchdogKills += len(killed)
					m.log.Info("chaos: watchdog: tandemd down past the lease; QEMU killed", "node", m.node(i).Name, "down_since", since.Format("15:04:05.000"), "qemu", len(killed))
				}
			}
			m.mu.Unlock()
		}
	}()
	return func() { cancel(); <-done }
}

// updateDown records whether node i's tandemd runs, for the watchdog.
// m.mu must be held.
func (m *nemesis) updateDown(i int) {
	p := m.r.proc(i)
	if m.paused[i] == 0 && m.off[i] == 0 && p != nil && p.Alive() {
		delete(m.down, i)
		delete(m.fired, i)
		return
	}
	if _, ok := m.down[i]; !ok {
		m.down[i] = time.Now()
	}
}

// vmTrail is where the samples saw a VM running, in order, one entry per
// QEMU: "n2#3 n3#1" (node and libvirt domain ID). Evidence for a report:
// a migration, a restart or a failover each add an entry.
func vmTrail(samples []DomainSample, vm string) string {
	var running []DomainSample
	for _, s := range samples {
		if s.Domain == vm && s.Running {
			running = append(running, s)
		}
	}
	slices.SortStableFunc(running, func(a, b DomainSample) int { return a.Before.Compare(b.Before) })
	var parts []string
	last := ""
	for _, s := range running {
		if k := fmt.Sprintf("%s#%d", s.Node, s.ID); k != last {
			parts, last = append(parts, k), k
		}
	}
	return strings.Join(parts, " ")
}
