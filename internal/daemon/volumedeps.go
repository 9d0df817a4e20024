package daemon

import (
	"context"
	"errors"

	"github.com/tandemhci/tandem/internal/pki"
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
		CA: func() (*pki.CA, error) {
			_, _, m := d.cluster()
			if m == nil {
				return nil, errors.New("this node is not in a cluster")
			}
			return pki.LoadCA(m.CACert, m.CAKey)
		},
		// The revocation list again, after the NBD TLS handshake checked it.
		CertCheck: d.certCheck,
		Secret:    d.dir.LoadClusterSecret,
	})
}
