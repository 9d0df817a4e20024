package placement

import (
	"slices"
	"strings"
)

// Automatic volume placement spreads replicas and primaries over the data
// nodes by count. Free space alone decided before, with the name breaking
// ties; but volume files are sparse, so free space hardly moves as
// volumes are created, and nodes with alike disks got every volume in name
// order: at 1000 volumes one node was the primary of 977 of them, and its
// loss failed them all over at once (issue 17). Free space still decides
// between nodes holding as many replicas; a node without room for the
// volume is no candidate (the caller filters those out).

// VolumeLoad is what volume placement balances: the replicas each node
// holds and how many volumes it was made the first primary of.
type VolumeLoad struct {
	Replicas, Primaries map[string]int
}

// RankVolumeNodes sorts cands best first for a new replica: the fewest
// replicas, then the most free space, then the name.
func RankVolumeNodes(cands []string, l VolumeLoad, free map[string]int64) {
	slices.SortFunc(cands, func(a, b string) int {
		if l.Replicas[a] != l.Replicas[b] {
			return l.Replicas[a] - l.Replicas[b]
		}
		if free[a] != free[b] {
			if free[a] > free[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
}

// PrimaryFirst returns the chosen nodes with the one that is first primary
// of the fewest volumes in front (the new volume's primary), the rank
// order kept otherwise and on ties. nodes is not changed.
func PrimaryFirst(nodes []string, l VolumeLoad) []string {
	out := slices.Clone(nodes)
	best := 0
	for i, n := range out {
		if l.Primaries[n] < l.Primaries[out[best]] {
			best = i
		}
	}
	p := out[best]
	copy(out[1:best+1], out[:best])
	out[0] = p
	return out
}
