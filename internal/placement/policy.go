package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Stranding is a VM that could not be restarted anywhere if Failed failed.
type Stranding struct {
	Failed    string
	VM        string
	MemoryMiB int
	// Why is each candidate's refusal, "node: reason", by node name.
	Why []string
}

func (s Stranding) Error() string {
	return fmt.Sprintf("N+1: if node %s failed, VM %s (%d MiB) could not be restarted anywhere (%s)", s.Failed, s.VM, s.MemoryMiB, strings.Join(s.Why, "; "))
}

// Admit checks N+1 for vm started on node: every started VM placed
// anywhere must be restartable elsewhere after any single node failure.
// It returns, per failed node in name order, the first VM (in recovery
// order) that could not restart; nil admits.
//
// The simulation is first fit over candidates in name order and counts
// the memory of the VMs it has restarted, not their anti-affinity groups
// (as before the move here): two victims of one group may land on the same
// node in it.
func Admit(c *Cluster, vm VM, node string) []Stranding {
	trial := Cluster{Nodes: c.Nodes, Replicas: c.Replicas}
	for _, o := range c.VMs {
		if o.Started && o.Node != "" && o.Name != vm.Name {
			trial.VMs = append(trial.VMs, o)
		}
	}
	moved := vm
	moved.Node, moved.Started = node, true
	trial.VMs = append(trial.VMs, moved)
	var out []Stranding
	for _, failed := range c.nodeNames() {
		victims := onNode(&trial, failed)
		extra := map[string]uint64{}
		for _, o := range victims {
			probe := o
			probe.Node = "" // not counted on any candidate yet
			var why []string
			placed := false
			for _, cand := range trial.nodeNames() {
				if cand == failed {
					continue
				}
				if r := canHost(&trial, probe, cand, extra); r != "" {
					why = append(why, cand+": "+r)
					continue
				}
				extra[cand] += uint64(o.MemoryMiB)
				placed = true
				break
			}
			if !placed {
				out = append(out, Stranding{Failed: failed, VM: o.Name, MemoryMiB: o.MemoryMiB, Why: why})
				break
			}
		}
	}
	return out
}

// onNode is the started VMs placed on node, in recovery order.
func onNode(c *Cluster, node string) []VM {
	var out []VM
	for _, v := range c.VMs {
		if v.Node == node && v.Started {
			out = append(out, v)
		}
	}
	sortRecovery(out)
	return out
}

// sortRecovery orders VMs as recovery restarts them: higher priority,
// then more memory (the hardest to fit go first), then name.
func sortRecovery(vms []VM) {
	slices.SortFunc(vms, func(a, b VM) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), cmp.Compare(b.MemoryMiB, a.MemoryMiB), strings.Compare(a.Name, b.Name))
	})
}

// RecoveryOrder is the VMs recovery restarts when dead died: started,
// placed on dead, not in HA error; in recovery order.
func RecoveryOrder(c *Cluster, dead string) []VM {
	var out []VM
	for _, v := range c.VMs {
		if v.Node == dead && v.Started && !v.HAError {
			out = append(out, v)
		}
	}
	sortRecovery(out)
	return out
}

// Step is one VM's restart in a recovery plan.
type Step struct {
	VM string
	// Node is the target, "" when no node can run the VM; Why then says
	// why each node cannot.
	Node string
	Why  string
}

// Recover plans the restart of dead's VMs: in RecoveryOrder, each on the
// best node Place gives without dead, each restart counted (memory, VM
// count, anti-affinity) before the next is placed. A VM no node can run
// stays on dead in the plan.
func Recover(c *Cluster, dead string) []Step {
	sim := Cluster{Nodes: c.Nodes, VMs: slices.Clone(c.VMs), Replicas: c.Replicas}
	var out []Step
	for _, v := range RecoveryOrder(c, dead) {
		p := Place(&sim, v, dead)
		if p.Node == "" {
			out = append(out, Step{VM: v.Name, Why: p.Why()})
			continue
		}
		out = append(out, Step{VM: v.Name, Node: p.Node})
		for i := range sim.VMs {
			if sim.VMs[i].Name == v.Name {
				sim.VMs[i].Node = p.Node
			}
		}
	}
	return out
}

// Move is one VM's evacuation from a node entering maintenance.
type Move struct {
	VM string
	// To is the target, "" when the VM cannot leave; Why then says why.
	To  string
	Why string
}

// Evacuate plans the moves off node (already in maintenance in c): each
// started VM placed there, by name, to the best ranked node whose move
// keeps N+1, or the best ranked one when force.
//
// Every move is decided on c as given, not on c after the earlier moves
// (as before the move here): two VMs may be sent to one node whose free
// memory fits only one of them, and the second migration then fails.
func Evacuate(c *Cluster, node string, force bool) []Move {
	var vms []VM
	for _, v := range c.VMs {
		if v.Node == node && v.Started {
			vms = append(vms, v)
		}
	}
	slices.SortFunc(vms, func(a, b VM) int { return strings.Compare(a.Name, b.Name) })
	var out []Move
	for _, v := range vms {
		p := Place(c, v, node)
		m := Move{VM: v.Name}
		for _, cand := range p.Ranked {
			if force || Admit(c, v, cand) == nil {
				m.To = cand
				break
			}
		}
		if m.To == "" {
			m.Why = p.Why()
			if len(p.Ranked) > 0 {
				m.Why = "every candidate breaks N+1 (use --force)"
			}
		}
		out = append(out, m)
	}
	return out
}

// Return is one VM's failback when node leaves maintenance.
type Return struct {
	VM string
	// Back: move the VM back to the node.
	Back bool
	// Stays says why a VM balanced failback would move cannot come back.
	Stays string
}

// Failback lists the VMs evacuated from node, by name. With balanced, each
// started one not already on node comes back when node can host it.
// Every VM listed, back or not, forgets where it came from (once its move
// back, if any, succeeded).
//
// Like Evacuate, each decision is on c as given: the VMs already decided
// back are not counted on node.
func Failback(c *Cluster, node string, balanced bool) []Return {
	var out []Return
	for _, v := range c.VMs {
		if v.EvacuatedFrom != node {
			continue
		}
		r := Return{VM: v.Name}
		if balanced && v.Started && v.Node != node {
			if why := CanHost(c, v, node); why != "" {
				r.Stays = why
			} else {
				r.Back = true
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Return) int { return strings.Compare(a.VM, b.VM) })
	return out
}
