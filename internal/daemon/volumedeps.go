package daemon

import (
	"context"

	"github.com/tandemhci/tandem/internal/volume"
)

// newVolumes wires the volume subsystem to the daemon. ctx is the run
// context: the volumes' background work ends with it.
func (d *Daemon) newVolumes(ctx context.Context) *volume.Manager {
	return volume.New(ctx, volume.Config{
		State: d.st,
		Meta: func() volume.Meta {
			if _, m, _ := d.cluster(); m != nil {
				return m
			}
			return nil
		},
		Host: func() volume.Host {
			if _, m, _ := d.cluster(); m != nil {
				return m.Host()
			}
			return nil
		},
		ReplicaID:     d.replicaID,
		ListFile:      d.dir.VolumesFile(),
		NBDSocket:     d.dir.NBDSocket(),
		QuorumTimeout: d.quorumTimeout(),
		CallNode:      d.callNode,
	})
}
