package volume

import (
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/placement"
)

// volumeLoad counts, for automatic placement (placement.RankVolumeNodes),
// the replicated volumes' replicas and first primaries per node. The first
// primary is Replicas[0], what placement decided; the primary may have
// moved since, which the metadata does not record. RBD volumes have no
// replicas of their own.
func volumeLoad(ms *consensus.MetaState) placement.VolumeLoad {
	l := placement.VolumeLoad{Replicas: map[string]int{}, Primaries: map[string]int{}}
	for _, e := range ms.Volumes {
		if e.IsRBD() || len(e.Replicas) == 0 {
			continue
		}
		l.Primaries[e.Replicas[0]]++
		for _, n := range e.Replicas {
			l.Replicas[n]++
		}
	}
	return l
}
