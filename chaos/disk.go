package chaos

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/testcluster"
)

// Disk fault variants (Fault.Variant of a Disk fault). Each hits the volume
// files of one node, the ones of the fault's volume or all of them.
const (
	// DiskWriteEIO fails every write and sync of the volume's files on the
	// node with EIO: a primary detaches its disk and serves through its
	// peers, a secondary drops out of sync (replication/detach.go).
	DiskWriteEIO = iota
	// DiskSlow delays every operation on the node's volume files: a disk
	// that has not failed but is slow enough to make writes time out.
	DiskSlow
	// DiskReadEIO fails reads of the volume's files on the node: what
	// reads, verifies and resyncs do with a disk that returns bad sectors.
	DiskReadEIO
	diskVariants
)

// diskVariantName is the variant as printed in a schedule.
func diskVariantName(v int) string {
	switch v {
	case DiskWriteEIO:
		return "write-eio"
	case DiskSlow:
		return "slow"
	case DiskReadEIO:
		return "read-eio"
	}
	return fmt.Sprintf("variant%d", v)
}

// slowDiskDelay is what a DiskSlow fault adds to every operation: 50ms plus
// 5ms per point of Fault.Percent (0-30 when generated: 50-200ms).
func slowDiskDelay(percent int) time.Duration {
	return time.Duration(50+percent*5) * time.Millisecond
}

// FaultDisks is the DiskNemesis over internal/faultfs: each node's volume
// directory is a fault-injecting FUSE filesystem served by the test
// process, mounted before tandemd first starts (Open does it when
// Config.FaultDisks is set). With it, PowerOff is a power cut that drops
// every write tandemd had not synced, as a real one does.
type FaultDisks struct {
	mu    sync.Mutex
	disks map[string]*faultfs.FS // node name -> its volumes filesystem
	vols  func(Fault) string     // the volume a fault concerns (Runner.faultVolume)
	// held counts the faults in force per node: rules are per node, and a
	// heal clears them only when no other fault still needs them.
	held map[string][]Fault
}

// mountFaultDisks puts every node's volume directory on faultfs.
func mountFaultDisks(td *testcluster.Tandem, nodes []*testcluster.Node, vols func(Fault) string) (*FaultDisks, error) {
	d := &FaultDisks{disks: map[string]*faultfs.FS{}, vols: vols, held: map[string][]Fault{}}
	for _, n := range nodes {
		f, err := td.FaultDisk(n, "volumes")
		if err != nil {
			return nil, fmt.Errorf("chaos: fault disk of %s: %w", n.Name, err)
		}
		d.disks[n.Name] = f
	}
	return d, nil
}

// rule is the faultfs rule of a Disk fault.
func (d *FaultDisks) rule(f Fault) faultfs.Fault {
	vol := d.vols(f) + "*" // the volume's files: NAME.vol and its siblings
	switch f.Variant % diskVariants {
	case DiskSlow:
		// Under the replication and NBD timeouts on its own, above them
		// when several operations queue behind one another.
		return faultfs.Fault{Ops: faultfs.OpAll, Delay: slowDiskDelay(f.Percent)}
	case DiskReadEIO:
		return faultfs.Fault{Ops: faultfs.OpRead, Path: vol, Err: syscall.EIO}
	default:
		return faultfs.Fault{Ops: faultfs.OpWrite | faultfs.OpSync, Path: vol, Err: syscall.EIO}
	}
}

// Inject sets the fault's rule on the node's filesystem.
func (d *FaultDisks) Inject(_ context.Context, n *testcluster.Node, f Fault) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fs := d.disks[n.Name]
	if fs == nil {
		return fmt.Errorf("chaos: no fault disk on %s", n.Name)
	}
	if err := fs.SetFault(d.rule(f)); err != nil {
		return err
	}
	d.held[n.Name] = append(d.held[n.Name], f)
	return nil
}

// Heal removes the fault's rule: faultfs clears all rules at once, so the
// rules of the node's other faults still in force are set again.
func (d *FaultDisks) Heal(_ context.Context, n *testcluster.Node, f Fault) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fs := d.disks[n.Name]
	if fs == nil {
		return fmt.Errorf("chaos: no fault disk on %s", n.Name)
	}
	var rest []Fault
	for _, h := range d.held[n.Name] {
		if h.ID != f.ID {
			rest = append(rest, h)
		}
	}
	d.held[n.Name] = rest
	fs.Clear()
	for _, h := range rest {
		if err := fs.SetFault(d.rule(h)); err != nil {
			return err
		}
	}
	return nil
}

// healAll clears every rule (between schedules).
func (d *FaultDisks) healAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, fs := range d.disks {
		fs.Clear()
		delete(d.held, name)
	}
}

// Injected sums what the filesystems really failed or delayed, a check
// that the faults reached tandemd's I/O.
func (d *FaultDisks) Injected() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	total := 0
	for _, fs := range d.disks {
		for _, k := range fs.Counters().Injected {
			total += int(k)
		}
		total += int(fs.Counters().PowerLosses)
	}
	return total
}
