package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/internal/netdelay"
	"github.com/tandemhci/tandem/internal/testcluster"
)

// DiskNemesis injects disk faults under a node's data directory (the
// fault-injecting FUSE filesystem of internal/faultfs). The runner has a
// slot for it and generates Disk faults only when one is given.
type DiskNemesis interface {
	Inject(ctx context.Context, n *testcluster.Node, f Fault) error
	Heal(ctx context.Context, n *testcluster.Node, f Fault) error
}

// nemesis applies and heals faults on a cluster. Faults on one node may
// overlap (a pause inside a power-off, two losses): counters make a heal
// undo only what no other fault still needs. Apply and heal are
// serialised, so two faults never race on a node's processes.
type nemesis struct {
	r   *Runner
	log *slog.Logger

	mu       sync.Mutex
	off      map[int]int               // node -> power-off faults in force
	paused   map[int]int               // node -> pauses in force
	capped   map[int]int               // node -> bandwidth caps in force
	maint    map[int]int               // node -> maintenance faults in force
	tables   map[int][]int             // fault ID -> nodes holding its nft table
	delays   map[int]*netdelay.Delayer // fault ID -> the delayer its iptables rules queue to
	injected map[Kind]int              // what was really applied (a fault may be a no-op)
	opErrors int                       // operator actions that failed (logged, not anomalies)
	delayed  uint64                    // packets the delays held (Result.DelayedPackets)
	// The harness's watchdog (Config.VMs): since when each node's tandemd
	// has not run, whether the watchdog fired for that outage, and the
	// QEMUs it killed.
	down          map[int]time.Time
	fired         map[int]bool
	watchdogKills int
}

func newNemesis(r *Runner) *nemesis {
	return &nemesis{r: r, log: r.log, off: map[int]int{}, paused: map[int]int{}, capped: map[int]int{}, maint: map[int]int{},
		tables: map[int][]int{}, delays: map[int]*netdelay.Delayer{}, injected: map[Kind]int{}, down: map[int]time.Time{}, fired: map[int]bool{}}
}

// run plays s from start and returns once every fault is healed.
func (m *nemesis) run(ctx context.Context, s Schedule, start time.Time) {
	var wg sync.WaitGroup
	for _, f := range s.Faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !sleepUntil(ctx, start.Add(f.At)) {
				return
			}
			if f.NodeIsPrimary {
				// Found now, and healed on the same node.
				i, err := m.r.primaryOf(ctx, f)
				if err == nil && f.Kind == OneWay && i == f.Peer {
					err = fmt.Errorf("the primary is n%d, the one-way's other end", i+1)
				}
				if err != nil {
					m.r.harnessErr(fmt.Errorf("apply %s: %w", f, err))
					return
				}
				f.Node = i
				m.log.Info("chaos: fault on the volume's primary", "fault", f.String(), "node", m.node(i).Name)
			}
			m.apply(ctx, f)
			if f.Kind.Instant() {
				return
			}
			sleepUntil(ctx, start.Add(f.End()))
			m.heal(ctx, f)
		}()
	}
	wg.Wait()
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (m *nemesis) node(i int) *testcluster.Node { return m.r.c.Nodes[i] }

func (m *nemesis) apply(ctx context.Context, f Fault) {
	if m.applyOperator(ctx, f) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.node(f.Node)
	var err error
	applied := true
	switch f.Kind {
	case KillTandemd:
		applied = m.r.killTandemd(ctx, f.Node)
		m.updateDown(f.Node)
	case PauseShort, PauseLong:
		if m.paused[f.Node] == 0 {
			applied = m.r.signalTandemd(f.Node, unix.SIGSTOP)
		}
		m.paused[f.Node]++
		m.updateDown(f.Node)
	case KillLibvirtd:
		applied = m.off[f.Node] == 0 && m.r.killLibvirtd(ctx, f.Node)
	case KillQEMU:
		// Wherever the VM runs: on a node chosen at random it would
		// mostly find nothing. Restarting it is tandem's business.
		var names []string
		if f.VM < len(m.r.vms) {
			vm := m.r.vms[f.VM].name
			for _, p := range m.r.killQEMU(func(d string) bool { return d == vm }, -1) {
				names = append(names, m.node(p.node).Name)
			}
		}
		applied = len(names) > 0
		m.log.Info("chaos: QEMU killed", "fault", f.String(), "on", names)
	case PowerOff:
		if m.off[f.Node] == 0 {
			// With fault disks, a power cut: what was not synced is lost.
			m.r.c.PowerCut(n)
			m.r.c.Isolate(n)
			m.r.c.IsolateVM(n)
		}
		m.off[f.Node]++
		m.updateDown(f.Node)
	case Isolate:
		err = m.addTable(ctx, f, f.Node, m.others(f.Node), true, true, 0)
	case Split:
		in := map[int]bool{}
		for _, g := range f.Group {
			in[g] = true
		}
		var rest []int
		for i := range m.r.c.Nodes {
			if !in[i] {
				rest = append(rest, i)
			}
		}
		for _, g := range f.Group {
			if err = m.addTable(ctx, f, g, rest, true, true, 0); err != nil {
				break
			}
		}
	case OneWay:
		err = m.addTable(ctx, f, f.Node, []int{f.Peer}, false, true, 0)
	case Loss:
		err = m.addTable(ctx, f, f.Node, m.others(f.Node), true, true, f.Percent)
	case Delay:
		err = m.addDelay(ctx, f)
	case Bandwidth:
		if m.capped[f.Node] == 0 {
			_, err = m.r.c.Exec(ctx, n, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "4mbit", "burst", "32kbit", "latency", "200ms")
		}
		m.capped[f.Node]++
	case Disk:
		if m.r.cfg.Disk == nil {
			applied = false
		} else {
			err = m.r.cfg.Disk.Inject(ctx, n, f)
		}
	default:
		applied = false
	}
	if err != nil {
		// The harness failing to inject is not the product's anomaly, but
		// it makes the schedule's result meaningless: say so loudly.
		m.r.harnessErr(fmt.Errorf("apply %s: %w", f, err))
		return
	}
	if applied {
		m.injected[f.Kind]++
	}
	m.log.Info("chaos: applied", "fault", f.String(), "applied", applied)
}

// applyOperator runs an operator action, outside the nemesis lock: an
// action may wait for a quorum or an evacuation for seconds, and faults
// must go on meanwhile. It reports whether f was one.
func (m *nemesis) applyOperator(ctx context.Context, f Fault) bool {
	applied := true
	switch f.Kind {
	case Maintenance:
		m.mu.Lock()
		m.maint[f.Node]++
		first := m.maint[f.Node] == 1
		m.mu.Unlock()
		if first {
			applied = m.operator(ctx, f, "node", "maintenance", "enable", m.node(f.Node).Name, "--force")
		}
	case Promote:
		applied = m.r.promote(ctx, f)
	case Resync:
		applied = m.operator(ctx, f, "volume", "resync", m.r.faultVolume(f))
	case Verify:
		applied = m.operator(ctx, f, "volume", "verify", m.r.faultVolume(f), "--in-sync-only")
	case Migrate:
		applied = m.r.migrate(ctx, f)
	default:
		return false
	}
	m.mu.Lock()
	if applied {
		m.injected[f.Kind]++
	} else {
		m.opErrors++
	}
	m.mu.Unlock()
	m.log.Info("chaos: applied", "fault", f.String(), "applied", applied)
	return true
}

func (m *nemesis) heal(ctx context.Context, f Fault) {
	if f.Kind == Maintenance {
		m.mu.Lock()
		m.maint[f.Node]--
		last := m.maint[f.Node] == 0
		m.mu.Unlock()
		if last {
			m.operator(ctx, f, "node", "maintenance", "disable", m.node(f.Node).Name)
		}
		m.log.Info("chaos: healed", "fault", f.String())
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.node(f.Node)
	var err error
	switch f.Kind {
	case KillTandemd:
		if m.off[f.Node] == 0 {
			err = m.r.ensureTandemd(ctx, f.Node)
		}
		m.updateDown(f.Node)
	case PauseShort, PauseLong:
		m.paused[f.Node]--
		if m.paused[f.Node] == 0 {
			m.r.signalTandemd(f.Node, unix.SIGCONT)
		}
		m.updateDown(f.Node)
	case KillLibvirtd:
		if m.off[f.Node] == 0 {
			err = m.r.ensureLibvirtd(ctx, f.Node)
		}
	case PowerOff:
		m.off[f.Node]--
		if m.off[f.Node] == 0 {
			m.r.c.Heal(n)
			m.r.c.HealVM(n)
			// A host boots libvirtd, then tandemd.
			err = m.r.ensureLibvirtd(ctx, f.Node)
			if e := m.r.ensureTandemd(ctx, f.Node); err == nil {
				err = e
			}
		}
		m.updateDown(f.Node)
	case Isolate, Split, OneWay, Loss:
		for _, i := range m.tables[f.ID] {
			if _, e := m.r.c.Exec(ctx, m.node(i), "nft", "delete", "table", "inet", tableName(f)); e != nil && err == nil {
				err = e
			}
		}
		delete(m.tables, f.ID)
	case Delay:
		err = m.removeDelay(ctx, f)
	case Bandwidth:
		m.capped[f.Node]--
		if m.capped[f.Node] == 0 {
			_, err = m.r.c.Exec(ctx, n, "tc", "qdisc", "del", "dev", "eth0", "root")
		}
	case Disk:
		if m.r.cfg.Disk != nil {
			err = m.r.cfg.Disk.Heal(ctx, n, f)
		}
	}
	if err != nil {
		m.r.harnessErr(fmt.Errorf("heal %s: %w", f, err))
		return
	}
	m.log.Info("chaos: healed", "fault", f.String())
}

// healAll undoes whatever may be left: every rule, cap and pause, power and
// processes, maintenance. It is idempotent, so it also runs between
// schedules.
func (m *nemesis) healAll(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []string
	if m.r.fdisks != nil {
		m.r.fdisks.healAll()
	}
	for _, d := range m.delays {
		d.Release()
	}
	for i, n := range m.r.c.Nodes {
		// The delays' iptables rules too (iptables-nft keeps them in
		// nftables), so their delayers can go next.
		if _, err := m.r.c.Exec(ctx, n, "nft", "flush", "ruleset"); err != nil {
			errs = append(errs, err.Error())
		}
		// Deleting a root qdisc that is not there fails; that is fine.
		_, _ = m.r.c.Exec(ctx, n, "tc", "qdisc", "del", "dev", "eth0", "root")
		m.r.signalTandemd(i, unix.SIGCONT)
		m.r.c.Heal(n)
		m.r.c.HealVM(n)
		if err := m.r.ensureLibvirtd(ctx, i); err != nil {
			errs = append(errs, err.Error())
		}
		if err := m.r.ensureTandemd(ctx, i); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for id, d := range m.delays {
		_ = d.Close()
		queued, _, _ := d.Stats()
		m.delayed += queued
		delete(m.delays, id)
	}
	for i, k := range m.maint {
		if k > 0 {
			m.operator(ctx, Fault{Kind: Maintenance, Node: i}, "node", "maintenance", "disable", m.node(i).Name)
		}
	}
	clear(m.off)
	clear(m.paused)
	clear(m.capped)
	clear(m.maint)
	clear(m.tables)
	clear(m.down)
	clear(m.fired)
	if len(errs) > 0 {
		return fmt.Errorf("heal all: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (m *nemesis) others(i int) []int {
	var o []int
	for j := range m.r.c.Nodes {
		if j != i {
			o = append(o, j)
		}
	}
	return o
}

func tableName(f Fault) string { return fmt.Sprintf("chaos%d", f.ID) }

// addTable drops backend traffic between node i and peers in node i's
// namespace: inbound (from peers) and/or outbound (to peers), all of it or,
// with pct > 0, pct% at random (nftables numgen).
func (m *nemesis) addTable(ctx context.Context, f Fault, i int, peers []int, in, out bool, pct int) error {
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, m.node(p).IP)
	}
	set := "{ " + strings.Join(addrs, ", ") + " }"
	verdict := "drop"
	if pct > 0 {
		verdict = fmt.Sprintf("numgen random mod 100 < %d drop", pct)
	}
	t := tableName(f)
	cmds := []string{fmt.Sprintf("add table inet %s", t)}
	if in {
		cmds = append(cmds, fmt.Sprintf("add chain inet %s in { type filter hook input priority 0 ; }", t),
			fmt.Sprintf("add rule inet %s in ip saddr %s %s", t, set, verdict))
	}
	if out {
		cmds = append(cmds, fmt.Sprintf("add chain inet %s out { type filter hook output priority 0 ; }", t),
			fmt.Sprintf("add rule inet %s out ip daddr %s %s", t, set, verdict))
	}
	if _, err := m.r.c.Exec(ctx, m.node(i), "nft", strings.Join(cmds, " ; ")); err != nil {
		return err
	}
	m.tables[f.ID] = append(m.tables[f.ID], i)
	return nil
}

// addDelay holds node f.Node's backend packets, to and from the other
// nodes, for f.Latency each (internal/netdelay): a delayer on queue f.ID
// in the node's namespace first, then the iptables rules that queue to it.
func (m *nemesis) addDelay(ctx context.Context, f Fault) error {
	n := m.node(f.Node)
	d, err := netdelay.Start(netdelay.Config{NetNS: filepath.Join("/run/netns", n.NS), Queue: uint16(f.ID), Delay: f.Latency})
	if err != nil {
		return err
	}
	m.delays[f.ID] = d
	for _, argv := range netdelay.Rules("-I", m.peerIPs(f.Node), uint16(f.ID)) {
		if _, err := m.r.c.Exec(ctx, n, argv...); err != nil {
			return err
		}
	}
	return nil
}

// removeDelay lets go of what f's delayer holds, deletes its rules, then
// closes it.
func (m *nemesis) removeDelay(ctx context.Context, f Fault) error {
	d := m.delays[f.ID]
	if d == nil {
		return nil // healAll was first
	}
	// Held packets go first, so that none is overtaken by one that no
	// longer passes the queue.
	d.Release()
	var err error
	for _, argv := range netdelay.Rules("-D", m.peerIPs(f.Node), uint16(f.ID)) {
		if _, e := m.r.c.Exec(ctx, m.node(f.Node), argv...); e != nil && err == nil {
			err = e
		}
	}
	if e := d.Close(); e != nil && err == nil {
		err = e
	}
	queued, _, failed := d.Stats()
	m.delayed += queued
	delete(m.delays, f.ID)
	m.log.Info("chaos: delay healed", "fault", f.String(), "packets", queued, "failed", failed)
	return err
}

func (m *nemesis) peerIPs(i int) []string {
	var ips []string
	for _, p := range m.others(i) {
		ips = append(ips, m.node(p).IP)
	}
	return ips
}

// operator runs a CLI action through a node that answers; a refusal (no
// quorum, replica not UpToDate) is expected under faults and only logged.
func (m *nemesis) operator(ctx context.Context, f Fault, args ...string) bool {
	if _, err := m.r.cli(ctx, args...); err != nil {
		m.log.Info("chaos: operator action refused", "fault", f.String(), "err", err)
		return false
	}
	return true
}
