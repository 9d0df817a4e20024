package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhci/tandem/bench/internal/vmbench"
)

// failover runs bench/failover's hard-host-loss series on a VM whose disk
// is an RBD volume: IPMI fencing, the guest on n1, -runs crashes of the
// host running it.
func (b *bench) failover(ctx context.Context) error {
	env, cfg := b.env, b.cfg
	fo := &Failover{}
	b.rep.Failover = fo
	w, err := env.WarmLibvirtMs(ctx)
	if err != nil {
		return err
	}
	fo.LibvirtWarmup = w
	if fo.Timing, err = env.IPMIFencing(ctx); err != nil {
		return err
	}
	n1 := env.C.Nodes[0]
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, _, err = env.CLI(cctx, n1, "volume", "create", vmDisk, "--size", cfg.series.Disk, "--backend", "rbd")
	cancel()
	if err != nil {
		return fmt.Errorf("the VM's disk: %w", err)
	}
	pcap := ""
	if cfg.logs != "" {
		if err := os.MkdirAll(cfg.logs, 0o755); err != nil {
			return err
		}
		pcap = filepath.Join(cfg.logs, "rbd-failover.pcap")
	}
	series := vmbench.NewFailover(env, cfg.series.Options(vmbench.FailoverOptions{VM: vmName, Disk: vmDisk, GuestHost: guestHost,
		Phases: vmbench.RBDPhases(), DiskState: vmbench.RBDDisk(), PcapPath: pcap, LogLines: logLines}))
	b.rep.GuestIP = series.IP
	defer func() {
		capt, err := series.Close()
		fo.Capture = capt
		if err != nil {
			b.rep.Errors = append(b.rep.Errors, err.Error())
		}
	}()
	if err := series.Start(ctx, n1, cfg.series.Memory, "--disk-volume", vmDisk); err != nil {
		b.rep.LogExcerpts = env.Excerpts(vmName, logLines)
		return err
	}
	err = series.Runs(ctx, cfg.series.Runs, func(r vmbench.Run) { fo.Runs = append(fo.Runs, r) })
	if ctx.Err() == nil {
		if serr := series.StopVM(ctx); serr != nil {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("vm stop: %v", serr))
		}
	}
	return err
}
