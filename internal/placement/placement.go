package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Replica is a node's replica state for a volume, with DRBD's names.
type Replica string

// Replica states; None is a node that holds no replica (or a volume whose
// states are unknown).
const (
	None         Replica = ""
	UpToDate     Replica = "UpToDate"
	Outdated     Replica = "Outdated"
	Inconsistent Replica = "Inconsistent"
	SyncSource   Replica = "SyncSource"
	SyncTarget   Replica = "SyncTarget"
	// Failed: the disk was detached after an I/O error; a full resync
	// brings it back.
	Failed Replica = "Failed"
)

// Node is one node as placement sees it.
type Node struct {
	Name        string
	Member      bool // a member of the cluster (not joining, not removed)
	Witness     bool
	Maintenance bool
	// Up is the node's liveness for placement: its compute answered and
	// is available (libvirtd reachable). A dead node is not up.
	Up          bool
	CapacityMiB uint64 // memory for VMs (meaningful only when Up)
}

// VM is one VM record. Its memory counts on Node while Started.
type VM struct {
	Name         string
	MemoryMiB    int
	Priority     int // higher restarts first
	AntiAffinity string
	Volumes      []string
	Node         string // where it runs or last ran; "" never placed
	Started      bool   // desired state is started
	HAError      bool   // HA gave up on it: recovery leaves it alone
	// EvacuatedFrom is the node a maintenance evacuation moved it from.
	EvacuatedFrom string
}

// Cluster is everything placement decides on.
type Cluster struct {
	Nodes []Node
	VMs   []VM
	// Replicas is each volume's state per node; a volume missing here
	// did not answer.
	Replicas map[string]map[string]Replica
}

func (c *Cluster) node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// nodeNames is every node's name, sorted: the order ties are broken in.
func (c *Cluster) nodeNames() []string {
	out := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// UsedMiB is the memory of the started VMs placed on node.
func (c *Cluster) UsedMiB(node string) uint64 {
	var used uint64
	for _, v := range c.VMs {
		if v.Node == node && v.Started {
			used += uint64(v.MemoryMiB)
		}
	}
	return used
}

func (c *Cluster) running(node string) int {
	n := 0
	for _, v := range c.VMs {
		if v.Node == node && v.Started {
			n++
		}
	}
	return n
}

func (c *Cluster) replica(vol, node string) Replica {
	return c.Replicas[vol][node]
}

// CanHost says why node cannot run vm now, "" when it can.
func CanHost(c *Cluster, vm VM, node string) string {
	return canHost(c, vm, node, nil)
}

// canHost is CanHost with extra memory already planned on nodes.
func canHost(c *Cluster, vm VM, node string, extra map[string]uint64) string {
	n, ok := c.node(node)
	switch {
	case !ok || !n.Member:
		return "not a member"
	case n.Witness:
		return "a witness runs no VMs"
	case n.Maintenance:
		return "in maintenance"
	case !n.Up:
		return "compute unavailable (libvirtd not reachable, or the node does not answer)"
	}
	for _, vol := range vm.Volumes {
		// SyncSource is refused too, although it holds every write: only
		// the plain UpToDate state counts (as before the move here).
		switch st := c.replica(vol, node); st {
		case UpToDate:
		case None:
			return fmt.Sprintf("holds no replica of volume %s", vol)
		case Failed:
			return fmt.Sprintf("its replica of volume %s is Failed (its disk was detached after an I/O error; once the disk works, a full resync brings it back: 'tandem volume resync %s --wait')", vol, vol)
		default:
			return fmt.Sprintf("its replica of volume %s is %s (it misses acknowledged writes; wait for the resync)", vol, st)
		}
	}
	if vm.AntiAffinity != "" {
		if o := conflict(c, vm, node); o != "" {
			return fmt.Sprintf("VM %s of anti-affinity group %s runs there", o, vm.AntiAffinity)
		}
	}
	free := int64(n.CapacityMiB) - int64(c.UsedMiB(node)) - int64(extra[node])
	if vm.Node == node && vm.Started {
		free += int64(vm.MemoryMiB) // already counted there
	}
	if free < int64(vm.MemoryMiB) {
		return fmt.Sprintf("%d MiB free for VMs, %d needed", max(free, 0), vm.MemoryMiB)
	}
	return ""
}

// conflict is the first (by name) other started VM of vm's anti-affinity
// group on node, "" when none.
func conflict(c *Cluster, vm VM, node string) string {
	var found string
	for _, o := range c.VMs {
		if o.Name != vm.Name && o.AntiAffinity == vm.AntiAffinity && o.Node == node && o.Started {
			if found == "" || o.Name < found {
				found = o.Name
			}
		}
	}
	return found
}

// Placement is the outcome of choosing a node for one VM.
type Placement struct {
	// Node is the chosen node, "" when none can run the VM.
	Node string
	// Ranked is every node considered that can run the VM, best first.
	Ranked []string
	// Rejected is why each other node considered cannot.
	Rejected map[string]string
}

// Why lists the rejections, "node: reason" by node name.
func (p Placement) Why() string {
	var parts []string
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range p.Rejected {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, n+": "+p.Rejected[n])
	}
	return strings.Join(parts, "; ")
}

// Place ranks every node but exclude for vm: fewest started VMs, then
// most free memory, then name.
func Place(c *Cluster, vm VM, exclude string) Placement {
	p := Placement{Rejected: map[string]string{}}
	for _, name := range c.nodeNames() {
		if name == exclude {
			continue
		}
		if r := CanHost(c, vm, name); r != "" {
			p.Rejected[name] = r
			continue
		}
		p.Ranked = append(p.Ranked, name)
	}
	free := func(name string) int64 {
		n, _ := c.node(name)
		// Without vm's own share (unlike CanHost): the node as it is.
		return int64(n.CapacityMiB) - int64(c.UsedMiB(name))
	}
	slices.SortFunc(p.Ranked, func(a, b string) int {
		return cmp.Or(cmp.Compare(c.running(a), c.running(b)), cmp.Compare(free(b), free(a)), strings.Compare(a, b))
	})
	if len(p.Ranked) > 0 {
		p.Node = p.Ranked[0]
	}
	return p
}

// Start chooses where vm starts: requested when given (Node is "" and
// Rejected says why when it cannot), else the node vm last ran on when it
// can host it, else the best Place gives.
func Start(c *Cluster, vm VM, requested string) Placement {
	if requested != "" {
		if r := CanHost(c, vm, requested); r != "" {
			return Placement{Rejected: map[string]string{requested: r}}
		}
		return Placement{Node: requested, Ranked: []string{requested}, Rejected: map[string]string{}}
	}
	if vm.Node != "" && CanHost(c, vm, vm.Node) == "" {
		return Placement{Node: vm.Node, Ranked: []string{vm.Node}, Rejected: map[string]string{}}
	}
	return Place(c, vm, "")
}
