package testcluster

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/tandemhci/tandem/compute"
)

func dialLibvirtd(t *testing.T, ctx context.Context, lv *Libvirtd) *compute.Driver {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), nil)).With("node", lv.Node.Name)
	d, err := compute.Dial(ctx, lv.Socket, compute.DefaultURI, compute.WithLogger(log))
	if err != nil {
		t.Fatalf("Dial libvirtd on %s: %v", lv.Node.Name, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func startLibvirtd(t *testing.T, ctx context.Context, c *Cluster, n *Node) *Libvirtd {
	t.Helper()
	lv, err := c.StartLibvirtd(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

func qemuLogTail(lv *Libvirtd, dom string) string {
	return logTail(lv.QEMULog(dom), 20)
}

func TestLibvirtdMigrate(t *testing.T) {
	RequireLibvirtd(t)
	t.Parallel()
	c := New(t, Options{Nodes: 2})
	n1, n2 := c.Node("n1"), c.Node("n2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lv1 := startLibvirtd(t, ctx, c, n1)
	lv2 := startLibvirtd(t, ctx, c, n2)
	d1, d2 := dialLibvirtd(t, ctx, lv1), dialLibvirtd(t, ctx, lv2)

	total, free, err := d1.NodeMemory(ctx)
	if err != nil || total == 0 || free == 0 || free > total {
		t.Fatalf("NodeMemory = %d, %d MiB, %v", total, free, err)
	}

	const name = "mig1"
	spec := compute.VMSpec{
		Name:      name,
		VCPUs:     1,
		MemoryMiB: 64,
		Diskless:  true,
		NICs:      []compute.NICSpec{{Bridge: c.VMBridge, MAC: "52:54:00:00:00:01"}},
	}
	if err := d1.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v\n%s", err, qemuLogTail(lv1, name))
	}
	if running, err := d1.Running(ctx); err != nil || !slices.Contains(running, name) {
		t.Fatalf("Running on n1 = %v, %v", running, err)
	}

	var samples int
	res, err := d1.Migrate(ctx, name, lv2.URI, compute.MigrateOptions{
		MaxDowntime: 300 * time.Millisecond,
		Dest:        d2,
		Progress: func(p compute.MigrateProgress) {
			samples++
			t.Logf("progress: %v elapsed, memory %d/%d bytes, %d remaining", p.Elapsed, p.MemoryProcessed, p.MemoryTotal, p.MemoryRemaining)
		},
	})
	if err != nil {
		t.Fatalf("Migrate: %v\nQEMU on n1:\n%s\nQEMU on n2:\n%s", err, qemuLogTail(lv1, name), qemuLogTail(lv2, name))
	}
	t.Logf("migration: total %v, downtime %v, %d bytes (stats from %s), %d progress samples",
		res.Total, res.Downtime, res.DataTransferred, res.StatsFrom, samples)
	if res.Total <= 0 {
		t.Errorf("MigrateResult.Total = %v", res.Total)
	}

	if st, err := d2.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n2: state %v, %v", st, err)
	}
	if running, err := d1.Running(ctx); err != nil || slices.Contains(running, name) {
		t.Fatalf("Running on n1 after migration = %v, %v", running, err)
	}
	// MigrateUndefineSource: n1 forgets the domain; n2 keeps it defined.
	if _, err := d1.State(ctx, name); !compute.IsNotFoundErr(err) {
		t.Fatalf("n1 still knows %s after migration: %v", name, err)
	}
	list, err := d2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(di compute.DomainInfo) bool { return di.Name == name }); i < 0 {
		t.Fatalf("n2 list %+v lacks %s", list, name)
	}
	// And back, without a destination Driver: the numbers then come from
	// the source if it still has them, else from Migrate's own clock.
	back, err := d2.Migrate(ctx, name, lv1.URI, compute.MigrateOptions{})
	if err != nil {
		t.Fatalf("Migrate back: %v\nQEMU on n2:\n%s\nQEMU on n1:\n%s", err, qemuLogTail(lv2, name), qemuLogTail(lv1, name))
	}
	t.Logf("migration back: total %v, downtime %v, %d bytes (stats from %s)", back.Total, back.Downtime, back.DataTransferred, back.StatsFrom)
	if st, err := d1.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n1 after migrating back: state %v, %v", st, err)
	}
	if _, err := d2.State(ctx, name); !compute.IsNotFoundErr(err) {
		t.Fatalf("n2 still knows %s after migrating back: %v", name, err)
	}
	if _, err := d2.Migrate(ctx, name, lv1.URI, compute.MigrateOptions{}); !compute.IsNotFoundErr(err) {
		t.Errorf("Migrate of a domain n2 no longer has: %v, want not found", err)
	}

	// n2's QEMU is gone: only libvirtd is left in its namespace.
	for {
		pids, err := c.nsPids(n2.NS)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 1 && pids[0] == lv2.Proc.PID() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("processes on n2 after migration: %v, want only libvirtd %d", pids, lv2.Proc.PID())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestLibvirtdKillRestart(t *testing.T) {
	RequireLibvirtd(t)
	t.Parallel()
	c := New(t, Options{Nodes: 1})
	n1 := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lv := startLibvirtd(t, ctx, c, n1)
	d := dialLibvirtd(t, ctx, lv)
	const name = "vm1"
	spec := compute.VMSpec{Name: name, VCPUs: 1, MemoryMiB: 64, Diskless: true,
		NICs: []compute.NICSpec{{Bridge: c.VMBridge}}}
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v\n%s", err, qemuLogTail(lv, name))
	}
	_ = d.Close()

	// A host crash takes libvirtd and its QEMU down.
	c.Kill(n1)
	if lv.Proc.Alive() {
		t.Fatal("libvirtd alive after Kill")
	}
	if pids, err := c.nsPids(n1.NS); err != nil || len(pids) != 0 {
		t.Fatalf("processes left on n1 after Kill: %v %v", pids, err)
	}

	lv2 := startLibvirtd(t, ctx, c, n1)
	if lv2.Proc.PID() == lv.Proc.PID() {
		t.Fatal("same pid after restart")
	}
	d2 := dialLibvirtd(t, ctx, lv2)
	// The persistent definition survived the "reboot"; the guest did not.
	if st, err := d2.State(ctx, name); err != nil || st != compute.StateShutOff {
		t.Fatalf("after restart: state %v, %v", st, err)
	}
	if err := d2.Start(ctx, name); err != nil {
		t.Fatalf("Start after restart: %v\n%s", err, qemuLogTail(lv2, name))
	}
	if err := d2.Destroy(ctx, name); err != nil {
		t.Fatal(err)
	}
	// A clean stop works too.
	if err := lv2.Proc.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(lv2.Socket); err == nil {
		t.Logf("socket %s left behind after stop (harmless: removed on start)", lv2.Socket)
	}
}
