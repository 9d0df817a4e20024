package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/internal/sealed"
)

// External storage (issue 15): the Ceph clusters volumes may live on, and
// the ownership of RBD volumes. An RBD volume has no volume shard: its
// catalog entry records the owner node (the one that holds the image's
// exclusive lock and serves its NBD export) and an epoch that every owner
// change raises, compared and set in one entry (VolumeRBDCmd).

// Storage types.
const StorageRBD = "rbd"

// Volume backends (VolumeEntry.Backend); "" is BackendReplicated.
const (
	BackendReplicated = "replicated"
	BackendRBD        = "rbd"
)

// StorageRecord is one external storage as the cluster stores it. The
// cephx key is only ever here sealed with the cluster secret
// (internal/sealed, bound to the storage's name), never in plain text.
type StorageRecord struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// MonHost lists the monitors (Ceph's mon_host syntax).
	MonHost string `json:"mon_host"`
	// Client is the cephx user without "client.".
	Client    string    `json:"client"`
	KeySealed string    `json:"key_sealed"`
	Pool      string    `json:"pool"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
	// Blocklisted are the Ceph clients Tandem blocklisted on this storage
	// whose entries are not removed yet (StorageBlocklistCmd).
	Blocklisted []BlockedClient `json:"blocklisted,omitempty"`
}

// BlockedClient is a Ceph client address Tandem blocklisted: an old
// owner's client fenced by a takeover or by HA's blocklist fencing. It is
// recorded before the blocklist is asked for, so no entry Tandem made is
// ever unknown to the catalog, and removed only by Node itself once it
// proved that no process of it can still hold the client.
type BlockedClient struct {
	Addr string `json:"addr"`
	// Node is the member whose backend address has Addr's IP; "" for a
	// client of another host, which Tandem leaves to expire.
	Node   string `json:"node,omitempty"`
	Volume string `json:"volume,omitempty"`
	// Since is when it was recorded; Expires when Ceph drops the entry by
	// itself, after which the record goes too.
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// StorageBlocklistCmd records blocklisted clients (Add) or, from Node,
// removes Node's entries (Remove, with Proof saying why no process of
// Node can still hold them).
type StorageBlocklistCmd struct {
	Storage string          `json:"storage"`
	Add     []BlockedClient `json:"add,omitempty"`
	Node    string          `json:"node,omitempty"`
	Remove  []string        `json:"remove,omitempty"`
	Proof   string          `json:"proof,omitempty"`
}

// maxBlocklisted bounds a storage's record of blocklisted clients; the
// oldest go first (Ceph expires them by itself).
const maxBlocklisted = 1024

// VolumeRBDCmd changes an RBD volume's catalog entry: a new owner (with
// Epoch the entry's current epoch, compared and raised in the same
// entry), or a new size.
type VolumeRBDCmd struct {
	Name  string `json:"name"`
	Owner string `json:"owner,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
	// Blocklisted are the old owner's client addresses the new owner
	// blocklisted before asking (for the event).
	Blocklisted []string `json:"blocklisted,omitempty"`
	Size        int64    `json:"size,omitempty"`
	Reason      string   `json:"reason,omitempty"`
}

// Command ops of external storage (kept at the end of the op lists).
const (
	opStorageAdd    = "storage-add"
	opStorageRemove = "storage-remove"
	opVolumeRBD     = "volume-rbd"
	// Not gated, like the other storage ops (see upgrade.go): a member
	// of an older release stops applying at it.
	opStorageBlocklist = "storage-blocklist"
)

// IsRBD reports whether the volume lives on Ceph RBD.
func (e *VolumeEntry) IsRBD() bool { return e.Backend == BackendRBD }

// checkRBDEntry is volume-create's check of an RBD volume.
func (s *MetaState) checkRBDEntry(v *VolumeEntry) error {
	if v.Storage == "" || v.Pool == "" || v.Image == "" || v.Owner == "" || len(v.Replicas) > 0 || v.Witness != "" {
		return fmt.Errorf("%w: an RBD volume needs a storage, pool, image and owner, and no replicas", ErrBadCommand)
	}
	if st, ok := s.Storage[v.Storage]; !ok || st.Type != StorageRBD {
		return fmt.Errorf("%w: no RBD storage named %q", ErrBadCommand, v.Storage)
	}
	if rec, ok := s.Nodes[v.Owner]; !ok || rec.State != NodeMember {
		return fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, v.Owner)
	}
	return nil
}

func (m *metaSM) applyStorage(c *Command) ([]byte, error) {
	s := m.s
	switch c.Op {
	case opStorageAdd:
		r := c.Storage
		if r == nil || r.Name == "" || r.Type != StorageRBD || r.MonHost == "" || r.Client == "" || r.Pool == "" {
			return nil, fmt.Errorf("%w: storage-add needs a name, type rbd, monitors, client and pool", ErrBadCommand)
		}
		// Never a plain key in the replicated state.
		if !sealed.IsSealed(r.KeySealed) {
			return nil, fmt.Errorf("%w: the storage's key must be sealed", ErrBadCommand)
		}
		if old, ok := s.Storage[r.Name]; ok {
			if old.Created.Equal(c.At) {
				return json.Marshal(old) // a retried proposal
			}
			return nil, fmt.Errorf("%w: a storage named %q exists already", ErrBadCommand, r.Name)
		}
		e := *r
		e.Created, e.CreatedBy = c.At, c.By
		if s.Storage == nil {
			s.Storage = map[string]*StorageRecord{}
		}
		s.Storage[e.Name] = &e
		m.audit(c, "storage-add", fmt.Sprintf("storage %s: %s pool %s, monitors %s, client.%s", e.Name, e.Type, e.Pool, e.MonHost, e.Client))
		return json.Marshal(&e)
	case opStorageRemove:
		if c.Storage == nil {
			return nil, fmt.Errorf("%w: storage-remove without storage", ErrBadCommand)
		}
		name := c.Storage.Name
		if _, ok := s.Storage[name]; !ok {
			return nil, fmt.Errorf("%w: no storage named %q", ErrBadCommand, name)
		}
		if used := s.StorageUsers(name); len(used) > 0 {
			return nil, fmt.Errorf("%w: storage %s holds volumes %s; delete them first", ErrBadCommand, name, strings.Join(used, ", "))
		}
		delete(s.Storage, name)
		m.audit(c, "storage-remove", "storage "+name)
		return nil, nil
	case opStorageBlocklist:
		return m.applyBlocklist(c)
	case opVolumeRBD:
		u := c.VolumeRBD
		if u == nil || u.Name == "" {
			return nil, fmt.Errorf("%w: volume-rbd without volume", ErrBadCommand)
		}
		e, ok := m.volumeForUpdate(u.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, u.Name)
		}
		if !e.IsRBD() {
			return nil, fmt.Errorf("%w: volume %s is not an RBD volume", ErrBadCommand, u.Name)
		}
		if u.Size > 0 {
			old := e.Size
			e.Size = u.Size
			m.audit(c, "volume-resize", fmt.Sprintf("volume %s: %d -> %d bytes", e.Name, old, e.Size))
		}
		if u.Owner != "" {
			if u.Epoch != e.Epoch {
				if e.Owner == u.Owner && e.Epoch == u.Epoch+1 {
					return json.Marshal(e) // a retried proposal
				}
				return nil, fmt.Errorf("%w: volume %s is at epoch %d (owner %s), not %d", ErrStaleEpoch, e.Name, e.Epoch, e.Owner, u.Epoch)
			}
			if rec, ok := s.Nodes[u.Owner]; !ok || rec.State != NodeMember {
				return nil, fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, u.Owner)
			}
			old := e.Owner
			e.Owner = u.Owner
			e.Epoch++
			detail := fmt.Sprintf("volume %s: owner %s -> %s (epoch %d)", e.Name, old, e.Owner, e.Epoch)
			if len(u.Blocklisted) > 0 {
				detail += "; old client(s) blocklisted first: " + strings.Join(u.Blocklisted, ", ")
			}
			if u.Reason != "" {
				detail += "; " + u.Reason
			}
			m.audit(c, "volume-owner", detail)
		}
		return json.Marshal(e)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

func (m *metaSM) applyBlocklist(c *Command) ([]byte, error) {
	u := c.StorageBlocklist
	if u == nil || u.Storage == "" {
		return nil, fmt.Errorf("%w: storage-blocklist without storage", ErrBadCommand)
	}
	st, ok := m.s.Storage[u.Storage]
	if !ok {
		return nil, fmt.Errorf("%w: no storage named %q", ErrBadCommand, u.Storage)
	}
	if len(u.Remove) > 0 && u.Node == "" {
		return nil, fmt.Errorf("%w: storage-blocklist removes only a node's own entries", ErrBadCommand)
	}
	// A new slice: published copies of the state are never mutated.
	var list []BlockedClient
	var removed []string
	for _, b := range st.Blocklisted {
		switch {
		case !b.Expires.After(c.At):
			// Ceph dropped it by itself.
		case b.Node == u.Node && slices.Contains(u.Remove, b.Addr):
			removed = append(removed, b.Addr)
		default:
			list = append(list, b)
		}
	}
	for _, b := range u.Add {
		if b.Addr == "" {
			return nil, fmt.Errorf("%w: a blocklisted client without address", ErrBadCommand)
		}
		if i := slices.IndexFunc(list, func(o BlockedClient) bool { return o.Addr == b.Addr }); i >= 0 {
			if b.Expires.After(list[i].Expires) {
				list[i].Expires = b.Expires
			}
			continue
		}
		b.Since = c.At
		list = append(list, b)
	}
	if over := len(list) - maxBlocklisted; over > 0 {
		list = list[over:]
	}
	rec := *st
	rec.Blocklisted = list
	m.s.Storage[u.Storage] = &rec
	if len(removed) > 0 {
		m.audit(c, "rbd-unblocklist", fmt.Sprintf("storage %s: %s dropped its old client(s) %s; their blocklist entries are removed (%s)", u.Storage, u.Node, strings.Join(removed, ", "), u.Proof))
	}
	return json.Marshal(&rec)
}

// StorageUsers lists, sorted, the volumes on storage name.
func (s *MetaState) StorageUsers(name string) []string {
	var out []string
	for _, v := range s.Volumes {
		if v.IsRBD() && v.Storage == name {
			out = append(out, v.Name)
		}
	}
	slices.Sort(out)
	return out
}

// AddStorage records an external storage; r.KeySealed must be sealed.
func (m *Meta) AddStorage(ctx context.Context, r StorageRecord) (*StorageRecord, error) {
	return proposeAs[StorageRecord](ctx, m, Command{Op: opStorageAdd, Storage: &r}, "storage")
}

// RemoveStorage forgets a storage no volume uses.
func (m *Meta) RemoveStorage(ctx context.Context, name string) error {
	_, err := m.propose(ctx, Command{Op: opStorageRemove, Storage: &StorageRecord{Name: name}})
	return err
}

// Blocklist records blocked clients before they are blocklisted, or
// removes a node's entries it proved dropped (StorageBlocklistCmd).
func (m *Meta) Blocklist(ctx context.Context, u StorageBlocklistCmd) (*StorageRecord, error) {
	return proposeAs[StorageRecord](ctx, m, Command{Op: opStorageBlocklist, StorageBlocklist: &u}, "storage")
}

// UpdateRBDVolume changes an RBD volume's owner (compared with its epoch)
// or size, and returns the entry as committed.
func (m *Meta) UpdateRBDVolume(ctx context.Context, u VolumeRBDCmd) (*VolumeEntry, error) {
	return proposeAs[VolumeEntry](ctx, m, Command{Op: opVolumeRBD, VolumeRBD: &u}, "volume")
}
