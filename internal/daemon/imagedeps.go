package daemon

import (
	"github.com/tandemhci/tandem/internal/images"
)

// newImages wires the ISO image store to the daemon (issue 18).
func (d *Daemon) newImages() *images.Manager {
	return images.New(images.Config{
		State: d.st,
		Meta: func() images.Meta {
			if _, m, _ := d.cluster(); m != nil {
				return m
			}
			return nil
		},
		Peers: vmPeers{d},
	})
}
