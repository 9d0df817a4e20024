package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// newState is the shared state the daemon hands its subsystems. Its
// functions read the d.mu-guarded handles at each call, so they follow
// create, join and the expected-votes override; none may be called with
// d.mu held.
func (d *Daemon) newState() *state.State {
	return &state.State{
		Node: state.Node{
			Name: d.cfg.NodeName, DataDir: d.cfg.DataDir, Role: d.roleName(),
			BackendAddr: d.cfg.BackendAddr, RaftAddr: d.cfg.RaftAddr, AdminAddr: d.cfg.AdminAddr,
			ReplicationAddr: d.cfg.ReplicationAddr, NBDAddr: d.cfg.NBDAddr,
		},
		Log: d.log,
		Meta: func() state.Meta {
			_, m, _ := d.cluster()
			return state.MetaOf(m)
		},
		Quorum: d.requireQuorum,
		Peer:   d.peerClient,
		Now:    time.Now,
		Config: d.cfg,
		Cluster: func() (state.Cluster, bool) {
			id, m, t := d.cluster()
			if id == nil || m == nil || t == nil {
				return state.Cluster{}, false
			}
			return state.Cluster{Name: id.ClusterName, ID: id.ClusterID, CACert: t.CACert, NodeCert: t.Cert, ClientTLS: d.clientTLS}, true
		},
		Shards: func() *consensus.Volumes {
			_, m, _ := d.cluster()
			if m == nil {
				return nil
			}
			return consensus.NewVolumes(m.Host(), d.cfg.NodeName)
		},
		Events:   d.recordEvent,
		Fence:    &state.SelfFence{},
		Removal:  &state.Removal{},
		Settings: settings.NewInForce(d.log),
		Stopped:  d.stoppedInfo,
	}
}

// recordEvent is state.Events: it records e in the metadata shard, logging
// a failure.
func (d *Daemon) recordEvent(ctx context.Context, e consensus.Event) {
	_, meta, _ := d.cluster()
	if meta == nil {
		return
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if _, err := meta.AddEvent(ectx, e); err != nil {
		d.log.Warn("cannot record event", "kind", e.Kind, "node", e.Node, "vm", e.VM, "err", err)
	}
}

// newMembers wires the membership subsystem to the daemon.
func (d *Daemon) newMembers() *membership.Manager {
	return membership.New(membership.Config{
		State:   d.st,
		Volumes: volumesView{d: d},
		Cluster: func() (membership.Cluster, bool) {
			id, _, m := d.cluster()
			if id == nil || m == nil {
				return membership.Cluster{}, false
			}
			// A node that predates cluster secrets has none to hand on;
			// membership warns, the joiner learns how to add one.
			secret, err := d.dir.LoadClusterSecret()
			if err != nil && !errors.Is(err, nodedir.ErrNoClusterSecret) {
				d.log.Warn("cluster secret unusable; joining nodes get none", "err", err)
			}
			return membership.Cluster{Name: id.ClusterName, ID: id.ClusterID, CACert: m.CACert, CAKey: m.CAKey, Secret: secret}, true
		},
		Init:   initHooks{d},
		Rejoin: rejoinHooks{d},
		// d.mets is made after the managers, before any server runs.
		JoinRefused: func(reason string) {
			if d.mets != nil {
				d.mets.JoinRefused(reason)
			}
		},
		TellRemoved: d.tellRemoved,
	})
}

// volumesView is the volume subsystem as membership sees it.
type volumesView struct{ d *Daemon }

func (v volumesView) Show(ctx context.Context, name string, timeout time.Duration) (*tandemv1.VolumeInfo, error) {
	return v.d.vols.Show(ctx, name, timeout)
}

// initHooks is the daemon's side of create and join (membership.Init):
// the files in the data directory, the Raft host and the TLS servers, all
// guarded by d.mu.
type initHooks struct{ d *Daemon }

func (h initHooks) Lock()   { h.d.mu.Lock() }
func (h initHooks) Unlock() { h.d.mu.Unlock() }

func (h initHooks) ClusterLocked() (string, bool) {
	if h.d.id == nil {
		return "", false
	}
	return h.d.id.ClusterName, true
}

func (h initHooks) ResetLocked() { h.d.abortInitLocked() }

func (h initHooks) SaveTLSLocked(m membership.Material) error {
	return h.d.dir.SaveTLS((*nodedir.TLS)(&m))
}

func (h initHooks) SaveSecretLocked(secret []byte) error {
	return h.d.dir.SaveClusterSecret(secret)
}

func (h initHooks) SaveAdminLocked(c membership.AdminCredentials) error {
	return h.d.dir.SaveAdmin(nodedir.Admin(c))
}

func (h initHooks) StartLocked(ctx context.Context, id membership.Identity, members map[uint64]string, join bool) (state.Meta, error) {
	h.d.id = &id
	if err := h.d.startClusterLocked(ctx, members, join); err != nil {
		return nil, err
	}
	return state.MetaOf(h.d.meta), nil
}

func (h initHooks) SaveIdentityLocked(id membership.Identity) error {
	return h.d.dir.SaveIdentity((*nodedir.Identity)(&id))
}

func (h initHooks) ServeLocked() error { return h.d.startTLSServersLocked() }
