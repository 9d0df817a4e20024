package volume

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore/rbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
)

// storageCheckTimeout bounds the status's check of one storage: the
// status answers within the CLI's 10 s default while Ceph is down.
const storageCheckTimeout = 3 * time.Second

// storageWarnings is one line per external storage this node cannot reach
// now (the cluster status's storage line): "storage NAME (rbd, pool P,
// monitors M) is degraded: why". Each storage is asked in parallel within
// showCephTimeout, so a dead Ceph does not hold the status up.
func (m *Manager) storageWarnings(ctx context.Context, ms *consensus.MetaState) []string {
	names := sortedKeys(ms.Storage)
	out := make([]string, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		st := ms.Storage[name]
		wg.Go(func() {
			cfg, err := m.rbdConfig(st, "")
			if err == nil {
				cfg.MonTimeout, cfg.OSDTimeout = storageCheckTimeout, storageCheckTimeout
				cctx, cancel := context.WithTimeout(ctx, storageCheckTimeout+time.Second)
				defer cancel()
				var p *rbd.Pool
				if p, err = rbd.Connect(cctx, cfg); err == nil {
					_, err = p.Available(cctx)
					p.Close()
				}
			}
			if err != nil {
				out[i] = fmt.Sprintf("storage %s (%s, pool %s, monitors %s) is degraded: %s; its volumes (%d) cannot be created, opened or taken over until it answers", name, st.Type, st.Pool, st.MonHost,
					status.Convert(apierr.From(err)).Message(), len(ms.StorageUsers(name)))
			}
		})
	}
	wg.Wait()
	var lines []string
	for _, s := range out {
		if s != "" {
			lines = append(lines, s)
		}
	}
	return lines
}
