package recovery

import "slices"

// wakeShardsOf wakes this node's replicas of the volume shards of every
// node in unreachable (those the metadata leader suspects or declared
// dead) that it has not woken since the node became unreachable, and
// forgets the nodes no longer listed, so that a later loss wakes them
// again.
//
// Why: volume shards are sparse (consensus/sparse.go) and sleep when idle.
// A sleeping follower neither notices that its leader died nor, until its
// clock has run an election timeout since it woke, grants its vote to a
// candidate. If nothing wakes the survivors before HA promotes, each
// promotion's proposal waits for its shard's election, one after another:
// 140 volumes of a lost node took 18 s to promote (bench/scale, issue 17).
// Woken at suspicion, the shards elect while the node is being fenced.
// Every member that may lead must be woken, not only the metadata leader's
// replica (a witness cannot campaign): the leader does its own and asks
// the others in its pings.
func (m *Manager) wakeShardsOf(unreachable []string) {
	m.mu.Lock()
	var wake []string
	for _, n := range unreachable {
		if n != m.st.Node.Name && !m.woken[n] {
			m.woken[n] = true
			wake = append(wake, n)
		}
	}
	for n := range m.woken {
		if !slices.Contains(unreachable, n) {
			delete(m.woken, n)
		}
	}
	m.mu.Unlock()
	if len(wake) == 0 {
		return
	}
	go func() { // a ReadIndex per shard: not on the ping's path
		for _, n := range wake {
			if k := m.vols.WakeShards(n); k > 0 {
				m.log.Info("volume shards woken to elect leaders away from an unreachable node", "node", n, "shards", k)
			}
		}
	}()
}
