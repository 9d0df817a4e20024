package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/guest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	// cliTimeout bounds the short CLI calls (show, stop, verify).
	cliTimeout = 30 * time.Second
	// createTimeout bounds vm create --start (volume creation, start).
	createTimeout = 3 * time.Minute
	// readyTimeout bounds the wait for every replica to be UpToDate with
	// the expected primary before a migration.
	readyTimeout = 60 * time.Second
	// progressTimeout bounds the wait for the guest to progress after a
	// migration.
	progressTimeout = 30 * time.Second
	// ackAdvance is how many more disk writes the guest must acknowledge
	// after a migration (or at boot) to count as progressing.
	ackAdvance = 5
)

// runRate creates a VM sending rate datagrams per second and migrates it
// cfg.migrations times. Problems are recorded in the result and the report.
func (b *bench) runRate(ctx context.Context, idx int, s series) RateRun {
	rate := s.rate
	r := RateRun{Rate: rate, VM: fmt.Sprintf("mig%d", rate), GuestIP: b.vmIP(idx), Diskless: s.diskless}
	if s.diskless {
		r.VM += "-nodisk"
	}
	log := b.log.With("rate", rate, "vm", r.VM)
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		r.Errors = append(r.Errors, msg)
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s: %s", r.Label(), msg))
		log.Error(msg)
	}
	addr := fmt.Sprintf("%s:%d", b.c.ReceiverIP, receiverPort+idx)
	conn, err := b.c.ListenUDPOnSwitch(addr)
	if err != nil {
		fail("receiver: %v", err)
		return r
	}
	defer conn.Close()
	rx := guest.NewReceiver(conn, b.log)
	stopRx := rx.Start(ctx)
	defer func() {
		if err := stopRx(); err != nil {
			fail("receiver: %v", err)
		}
	}()
	r.Receiver = addr
	gs := guestStream{rx: rx, conn: conn, ip: r.GuestIP}

	n1 := b.c.Nodes[0]
	gc := guest.Config{IP: r.GuestIP + "/24", UDP: addr, Rate: rate, Disk: "/dev/vda"}
	args := []string{"vm", "create", r.VM, "--memory", b.cfg.memory, "--node", n1.Name,
		"--disk", fmt.Sprintf("%s,replicas=%d", b.cfg.disk, b.cfg.replicas)}
	if s.diskless {
		gc.Disk, args = "", args[:len(args)-2]
	}
	r.Cmdline = b.env.Img.Cmdline(gc)
	args = append(args, "--kernel", b.env.Img.Kernel, "--initrd", b.env.Img.Initrd, "--cmdline", r.Cmdline, "--nic", b.c.VMBridge, "--start", "--output", "json")
	log.Info("creating VM", "node", n1.Name, "cmdline", r.Cmdline, "diskless", s.diskless)
	created := time.Now()
	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	out, _, err := b.cli(cctx, n1, args...)
	cancel()
	if err != nil {
		fail("vm create: %v", err)
		r.LogExcerpts = b.excerpts(r.VM, "vm create failed")
		return r
	}
	var info tandemv1.VMInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		fail("vm create output: %v: %s", err, out)
		return r
	}
	r.Created = true
	wctx, cancel := context.WithTimeout(ctx, b.cfg.bootTimeout)
	first, err := rx.WaitFor(wctx, func(d guest.Datagram) bool { return d.Seq > uint64(rate) && (s.diskless || d.Acked > ackAdvance) })
	cancel()
	if err != nil {
		fail("guest did not come up within %s: %v", b.cfg.bootTimeout, err)
		r.LogExcerpts = b.excerpts(r.VM, "guest did not come up")
		return r
	}
	r.BootS = time.Since(created).Seconds()
	r.Boot = first.Boot
	log.Info("guest up", "after", time.Since(created).Round(time.Millisecond), "seq", first.Seq, "acked", first.Acked)

	// The nodes to migrate between: the disk's replicas, primary first.
	var disk string
	var ring []string
	if s.diskless {
		for _, n := range b.c.Nodes[:b.cfg.replicas] {
			ring = append(ring, n.Name)
		}
	} else {
		disk = r.VM + "-disk0"
		vol, err := b.volume(ctx, disk)
		if err != nil {
			fail("volume show: %v", err)
			return r
		}
		ring = []string{vol.GetPrimary()}
		for _, rep := range vol.GetReplicas() {
			if rep.GetNode() != vol.GetPrimary() {
				ring = append(ring, rep.GetNode())
			}
		}
		r.Witness = vol.GetWitness()
		if len(ring) < 2 {
			fail("volume %s has replicas on %v only: nowhere to migrate", disk, ring)
			return r
		}
	}
	r.Disk, r.ReplicaNodes = disk, ring

	// The reference: the same stream without a migration.
	q0 := time.Now()
	if err := ctxtime.Sleep(ctx, b.cfg.quiet); err != nil {
		return r
	}
	q1 := time.Now()
	if w, err := b.windowAfter(ctx, rx, q0, q1); err != nil {
		fail("reference window: %v", err)
	} else {
		ref := windowResult(w, rate)
		r.Reference = &ref
		r.ReferenceRate = float64(w.Received) / q1.Sub(q0).Seconds()
		log.Info("reference", "longest_gap_ms", fmt.Sprintf("%.1f", ref.LongestGapMs), "lost", ref.Lost, "received", ref.Received)
	}

	cur, failures := ring[0], 0
series:
	for k := 1; k <= s.migrations && ctx.Err() == nil; k++ {
		dst := ring[(slices.Index(ring, cur)+1)%len(ring)]
		m := b.migrate(ctx, gs, r.VM, disk, cur, dst, k, rate)
		r.Migrations = append(r.Migrations, m)
		if m.Error == "" {
			failures = 0
			cur = dst
			log.Info("migrated", "n", k, "from", m.From, "to", m.To, "outage_ms", fmt.Sprintf("%.1f", m.OutageMs),
				"total_ms", m.TotalMs, "downtime_ms", m.DowntimeMs, "lost", m.Lost, "wall_ms", fmt.Sprintf("%.0f", m.WallMs))
		} else {
			fail("migration %d %s -> %s: %s", k, cur, dst, m.Error)
			failures++
			if m.NodeAfter != "" && slices.Contains(ring, m.NodeAfter) {
				cur = m.NodeAfter
			}
			switch {
			case m.Rebooted:
				// The guest came back by itself; carry on with its new boot.
				if last, _, ok := rx.Last(); ok && last.Boot > r.Boot {
					r.Boot = last.Boot
				}
				r.Restarts = append(r.Restarts, Restart{After: k, How: "guest rebooted by itself", Boot: r.Boot})
			case m.guestHung():
				// Neither the migration nor interrupts bring it back:
				// restart it where it is, and carry on.
				boot, err := b.restartVM(ctx, gs, r.VM, cur, rate, s.diskless)
				if err != nil {
					fail("restarting the hung guest on %s: %v", cur, err)
					r.LogExcerpts = b.excerpts(r.VM, "restart after a hang failed")
					break series
				}
				r.Boot = boot
				r.Restarts = append(r.Restarts, Restart{After: k, How: "hung guest restarted (vm stop --force, vm start)", Boot: boot})
			}
			if failures >= maxConsecutiveFailures || len(r.Restarts) > maxGuestFailures {
				fail("ending the %s series after migration %d (%d consecutive failures, %d guest restarts)", r.Label(), k, failures, len(r.Restarts))
				break
			}
		}
		if err := ctxtime.Sleep(ctx, b.cfg.settle); err != nil {
			break
		}
	}

	r.Stream = continuity(rx.Arrivals())
	if !r.Stream.OK() {
		fail("guest stream not continuous: boots %v, %d sequence and %d acknowledged-counter regressions",
			r.Stream.Boots, r.Stream.SeqBackwards, r.Stream.AckedBackwards)
	}
	if ctx.Err() == nil && disk != "" {
		vctx, cancel := context.WithTimeout(ctx, cliTimeout)
		out, _, err := b.cli(vctx, b.c.Nodes[0], "volume", "verify", disk, "--output", "json")
		cancel()
		var ver tandemv1.VerifyVolumeResponse
		switch {
		case err != nil:
			fail("volume verify: %v", err)
		case adminclient.UnmarshalJSON([]byte(out), &ver) != nil:
			fail("volume verify output: %s", out)
		default:
			r.Verify = &VerifyResult{CheckedBytes: ver.GetCheckedBytes(), Mismatches: len(ver.GetMismatches())}
			if len(ver.GetMismatches()) > 0 {
				fail("volume verify: %d mismatching ranges between replicas", len(ver.GetMismatches()))
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cliTimeout)
	if _, _, err := b.cli(sctx, b.c.Nodes[0], "vm", "stop", r.VM, "--force"); err != nil {
		fail("vm stop: %v", err)
	} else {
		r.Stopped = true
	}
	cancel()
	r.Summary = summarize(r.Migrations, rate)
	return r
}

// waitAfter waits for the first datagram, among those arriving after the
// first skip ones, for which match(prev, d) is true; prev is the datagram
// that arrived just before d. It relies on WaitFor calling match once per
// arrival, in arrival order.
func waitAfter(ctx context.Context, rx *guest.Receiver, skip int, match func(prev, d guest.Datagram) bool) (guest.Datagram, error) {
	i := 0
	var prev guest.Datagram
	return rx.WaitFor(ctx, func(d guest.Datagram) bool {
		j, p := i, prev
		i, prev = i+1, d
		return j >= skip && match(p, d)
	})
}

// restarted is true when d comes from a new run of the guest agent: its
// boot counter moved (guests with a disk) or its sequence went back.
func restarted(prev, d guest.Datagram) bool {
	return d.Boot != prev.Boot || d.Seq < prev.Seq
}

func anyDatagram(_, _ guest.Datagram) bool { return true }

// received counts the datagrams received so far.
func received(rx *guest.Receiver) int { return len(rx.Arrivals()) }

// windowAfter waits until a datagram arrived after to, then measures the
// stream over [from, to].
func (b *bench) windowAfter(ctx context.Context, rx *guest.Receiver, from, to time.Time) (Window, error) {
	skip := received(rx)
	wctx, cancel := context.WithTimeout(ctx, progressTimeout)
	defer cancel()
	if _, err := waitAfter(wctx, rx, skip, anyDatagram); err != nil {
		return Window{}, fmt.Errorf("stream stopped: %w", err)
	}
	return analyzeWindow(rx.Arrivals(), from, to)
}

// restartVM force-stops the VM and starts it on node, then waits until a
// new boot of the guest sends and writes.
func (b *bench) restartVM(ctx context.Context, gs guestStream, vm, node string, rate int, diskless bool) (uint64, error) {
	n := b.c.Node(node)
	if n == nil {
		n = b.c.Nodes[0]
	}
	skip := received(gs.rx)
	sctx, cancel := context.WithTimeout(ctx, cliTimeout)
	_, _, err := b.cli(sctx, n, "vm", "stop", vm, "--force")
	cancel()
	if err != nil {
		return 0, err
	}
	sctx, cancel = context.WithTimeout(ctx, createTimeout)
	_, _, err = b.cli(sctx, n, "vm", "start", vm, "--node", node)
	cancel()
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.bootTimeout)
	defer cancel()
	d, err := waitAfter(wctx, gs.rx, skip, func(_, d guest.Datagram) bool {
		return d.Seq > uint64(rate) && (diskless || d.Acked > ackAdvance)
	})
	if err != nil {
		return 0, fmt.Errorf("guest did not come back: %w", err)
	}
	return d.Boot, nil
}

// migrate runs one `tandem vm migrate` from src to dst and measures it.
func (b *bench) migrate(ctx context.Context, gs guestStream, vm, disk, src, dst string, k, rate int) Migration {
	m := Migration{N: k, From: src, To: dst}
	rx := gs.rx
	log := b.log.With("vm", vm, "n", k, "from", src, "to", dst)
	if disk != "" {
		if err := b.waitReady(ctx, disk, src); err != nil {
			m.ReadyWarning = err.Error()
			log.Warn("volume not ready before the migration; migrating anyway", "err", err)
		}
	}
	srcNode := b.c.Node(src)
	args := []string{"vm", "migrate", vm, "--to", dst, "--output", "json"}
	if b.cfg.downtimeMs > 0 {
		args = append(args, "--downtime-ms", strconv.FormatUint(uint64(b.cfg.downtimeMs), 10))
	}
	skip := received(rx)
	mark, _, _ := rx.Last()
	t0 := time.Now()
	mctx, cancel := context.WithTimeout(ctx, b.cfg.migrateTimeout)
	out, _, err := b.cli(mctx, srcNode, args...)
	cancel()
	t1 := time.Now()
	atEnd, _, _ := rx.Last()
	m.Started = t0.UTC().Format(time.RFC3339Nano)
	m.WallMs = benchkit.MS(t1.Sub(t0))
	if err != nil {
		m.Error = err.Error()
	} else {
		var p tandemv1.MigrateProgress
		if uerr := adminclient.UnmarshalJSON([]byte(out), &p); uerr != nil {
			m.Error = fmt.Sprintf("migrate output: %v: %s", uerr, out)
		} else {
			m.TotalMs, m.DowntimeMs, m.Message = p.GetTotalMs(), p.GetDowntimeMs(), p.GetMessage()
			if p.GetPhase() != "done" || p.GetVm().GetNode() != dst {
				m.Error = fmt.Sprintf("migrate ended in phase %q with the VM on %q, want done on %s", p.GetPhase(), p.GetVm().GetNode(), dst)
			}
		}
	}

	// The guest must continue in the same run: more datagrams, more
	// acknowledged disk writes, and at least one datagram after t1.
	minSeq := max(mark.Seq+uint64(max(rate/5, 20)), atEnd.Seq)
	var rebooted bool
	var rebootedFrom guest.Datagram
	wctx, cancel := context.WithTimeout(ctx, progressTimeout)
	d, werr := waitAfter(wctx, rx, skip, func(prev, d guest.Datagram) bool {
		if restarted(prev, d) {
			rebooted, rebootedFrom = true, prev
			return true
		}
		return d.Seq > minSeq && (disk == "" || d.Acked >= mark.Acked+ackAdvance)
	})
	cancel()
	switch {
	case werr != nil:
		m.addError(fmt.Sprintf("guest made no progress within %s after the migration (seq %d, acked %d before it): %v",
			progressTimeout, mark.Seq, mark.Acked, werr))
		if ctx.Err() == nil {
			m.Diagnosis = b.diagnose(ctx, gs, vm, t0, true)
			dg := m.Diagnosis
			log.Error("guest silent after the migration", "silent_since_ms", fmt.Sprintf("%.0f", dg.SilentSinceMs), "last_seq", dg.LastSeq,
				"last_acked", dg.LastAcked, "vm_node", dg.VMNode, "vm_state", dg.VMState, "domstate", dg.DomState, "cpus", dg.CPUs,
				"resumed_after_poke", dg.ResumedAfterPoke)
			if dg.ResumedAfterPoke {
				m.addError("the stream resumed after datagrams were sent to the guest")
			}
		}
	case rebooted:
		m.Rebooted = true
		m.addError(fmt.Sprintf("guest rebooted: boot %d seq %d -> boot %d seq %d", rebootedFrom.Boot, rebootedFrom.Seq, d.Boot, d.Seq))
		m.Diagnosis = b.diagnose(ctx, gs, vm, t0, false)
	default:
		m.AckedAdvanced = true
	}
	if werr == nil {
		if w, err := analyzeWindow(rx.Arrivals(), t0, t1); err != nil {
			m.addError("outage window: " + err.Error())
		} else {
			m.Window = windowResult(w, rate)
			m.OutageMs = m.Window.LongestGapMs
			m.Lost = w.Lost
			m.OutageAtMs = benchkit.MS(w.LongestStart.Sub(t0))
			if w.Rebooted {
				m.Rebooted = true
				m.addError("sequence restarted during the migration")
				if m.Diagnosis != nil {
					// The old boot's last datagram opened the longest gap.
					dg := m.Diagnosis
					dg.SilentSinceMs = m.OutageAtMs
					for _, g := range w.Around {
						if g.AtMs == 0 {
							dg.LastSeq, dg.LastAcked = g.Seq, g.Acked
						}
					}
					if disk != "" {
						// I2 across the crash: the rebooted guest must read
						// at least the last counter it had acknowledged.
						if c, ok := diskCounterAtBoot(dg.Consoles, d.Boot); ok {
							dg.DiskCounterAtBoot = &c
							durable := c >= dg.LastAcked
							dg.Durable = &durable
							if !durable {
								m.addError(fmt.Sprintf("acknowledged writes lost: the guest had acknowledged counter %d, it read %d after rebooting", dg.LastAcked, c))
							}
						}
					}
				}
			}
		}
	}

	if disk != "" { // a diskless guest has nothing to hand over
		if vol, err := b.volume(ctx, disk); err == nil {
			m.PrimaryAfter, m.EpochAfter, m.ReplicasAfter = vol.GetPrimary(), vol.GetEpoch(), vmbench.ReplicaSummary(vol)
			if m.Error == "" && vol.GetPrimary() != dst {
				m.Error = fmt.Sprintf("after the migration the primary of %s is %q, want %s", disk, vol.GetPrimary(), dst)
			}
		}
	}
	if m.Error != "" {
		vctx, cancel := context.WithTimeout(ctx, cliTimeout)
		if out, _, err := b.cli(vctx, b.c.Nodes[0], "vm", "show", vm, "--output", "json"); err == nil {
			var info tandemv1.VMInfo
			if adminclient.UnmarshalJSON([]byte(out), &info) == nil {
				m.NodeAfter = info.GetNode()
				m.StateAfter = info.GetState()
			}
		}
		cancel()
		m.LogExcerpts = b.excerpts(vm, "")
	}
	return m
}

// waitReady waits until disk's primary is src and every replica UpToDate.
func (b *bench) waitReady(ctx context.Context, disk, src string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		vol, err := b.volume(ctx, disk)
		if err == nil {
			err = volumeReady(vol, src)
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("volume %s not ready within %s: %w", disk, readyTimeout, err)
		}
		if err := ctxtime.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func volumeReady(v *tandemv1.VolumeInfo, primary string) error {
	if v.GetPrimary() != primary {
		return fmt.Errorf("primary %q, want %s", v.GetPrimary(), primary)
	}
	if v.GetMigrationTarget() != "" {
		return fmt.Errorf("migration window to %s still open", v.GetMigrationTarget())
	}
	for _, r := range v.GetReplicas() {
		if r.GetState() != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
			return fmt.Errorf("replicas %s", vmbench.ReplicaSummary(v))
		}
	}
	return nil
}

// volume reads a volume's state through the first node.
func (b *bench) volume(ctx context.Context, name string) (*tandemv1.VolumeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	out, _, err := b.cli(ctx, b.c.Nodes[0], "volume", "show", name, "--output", "json")
	if err != nil {
		return nil, err
	}
	var info tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("volume show json: %w: %s", err, out)
	}
	return &info, nil
}

// summarize computes a rate's distributions over its successful
// migrations.
func summarize(ms []Migration, rate int) Summary {
	s := Summary{Migrations: len(ms)}
	var outage, total, wall, down, lost, stall, clock, stopped, at []float64
	for _, m := range ms {
		if m.Error != "" {
			s.Failed++
			switch {
			case m.Rebooted:
				s.GuestCrashed++
			case m.guestHung():
				s.GuestHung++
			case m.Diagnosis != nil && m.Diagnosis.ResumedAfterPoke:
				s.GuestStalled++
			}
			continue
		}
		outage = append(outage, m.OutageMs)
		total = append(total, float64(m.TotalMs))
		wall = append(wall, m.WallMs)
		if m.DowntimeMs > 0 {
			down = append(down, float64(m.DowntimeMs))
		} else {
			s.DowntimeUnknown++
		}
		lost = append(lost, float64(m.Lost))
		s.LostTotal += m.Lost
		stall = append(stall, m.Window.AckStallMs)
		clock = append(clock, m.Window.GuestClockMs)
		stopped = append(stopped, m.OutageMs-m.Window.GuestClockMs)
		at = append(at, m.OutageAtMs)
	}
	s.Succeeded = len(outage)
	s.OutageMs, s.TotalMs, s.WallMs, s.DowntimeMs = distOf(outage), distOf(total), distOf(wall), distOf(down)
	s.Lost, s.AckStallMs, s.GuestClockMs, s.OutageAtMs = distOf(lost), distOf(stall), distOf(clock), distOf(at)
	s.StoppedMs = distOf(stopped)
	s.LossOutageMs = float64(s.LostTotal) / float64(max(s.Succeeded, 1)) * 1000 / float64(rate)
	return s
}

// windowResult is the JSON form of a Window at a given rate.
func windowResult(w Window, rate int) WindowResult {
	return WindowResult{
		Window:       w,
		LongestGapMs: benchkit.MS(w.Longest),
		GuestClockMs: benchkit.MS(w.GuestClock),
		AckStallMs:   benchkit.MS(w.AckStall),
		IntervalMs:   1000 / float64(rate),
	}
}
