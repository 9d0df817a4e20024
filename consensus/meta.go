package consensus

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/tandemhci/tandem/internal/version"
)

// MetaShardID is the shard holding cluster membership and configuration.
const MetaShardID uint64 = 1

// maxAudit bounds the audit trail kept in the metadata shard.
const maxAudit = 500

// Node membership states.
const (
	NodeJoining = "joining"
	NodeMember  = "member"
	NodeRemoved = "removed"
)

// Errors the metadata state machine returns; they cross the Raft boundary as
// result codes so every replica and every caller agree on them.
var (
	ErrAlreadyBootstrapped = errors.New("cluster already created")
	ErrNotBootstrapped     = errors.New("cluster not created")
	ErrTokenInvalid        = errors.New("join token is not valid for this cluster")
	ErrTokenUsed           = errors.New("join token was already used")
	ErrTokenExpired        = errors.New("join token has expired")
	ErrNodeExists          = errors.New("a node with this name is already a member")
	ErrNodeNotFound        = errors.New("no such node")
	ErrBadCommand          = errors.New("malformed metadata command")
	ErrVolumeNameTaken     = errors.New("a volume with this name exists")
	ErrNoSuchVolume        = errors.New("no such volume")
)

// ErrBadCommand stays last: it is the code for errors not in the list.
var resultErrors = []error{nil, ErrAlreadyBootstrapped, ErrNotBootstrapped, ErrTokenInvalid, ErrTokenUsed, ErrTokenExpired, ErrNodeExists, ErrNodeNotFound, ErrVolumeNameTaken, ErrNoSuchVolume, ErrVMNameTaken, ErrNoSuchVM,
	ErrCredentialExists, ErrNoSuchCredential, ErrLastAdmin, ErrCertRevoked, ErrBadCommand}

// FirstVolumeShard is the first shard ID given to a volume.
const FirstVolumeShard uint64 = 1000

// Volume catalog states.
const (
	VolumeCreating = "creating"
	VolumeReady    = "ready"
	VolumeDeleting = "deleting"
)

// VolumeEntry is a volume in the cluster catalog. Who is primary and which
// replicas are in sync lives in the volume's own shard, not here.
type VolumeEntry struct {
	Name    string `json:"name"`
	ShardID uint64 `json:"shard_id"`
	Size    int64  `json:"size"`
	// Replicas are the nodes holding data, the first being the initial primary.
	Replicas []string  `json:"replicas"`
	Witness  string    `json:"witness,omitempty"`
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
	// HA is what HA does when the primary's node is lost and no VM of it
	// is recovered: VolumeHAAuto (also "", in older entries) promotes the
	// best UpToDate replica once the node is fenced; VolumeHAManual waits
	// for an operator's promote.
	HA string `json:"ha,omitempty"`
	// Backend is BackendRBD for a volume on Ceph RBD (storage.go), empty
	// for a replicated one. An RBD volume has no shard and no replicas:
	// Storage, Pool and Image say where it is, Owner which node holds its
	// exclusive lock and serves it, Epoch counts owner changes.
	Backend string `json:"backend,omitempty"`
	Storage string `json:"storage,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Image   string `json:"image,omitempty"`
	Owner   string `json:"owner,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
}

// ClusterRecord describes the cluster itself.
type ClusterRecord struct {
	Name          string    `json:"name"`
	ID            string    `json:"id"`
	CreatedAt     time.Time `json:"created_at"`
	CAFingerprint string    `json:"ca_fingerprint"`
	// AdminTokenVerifiers are hex SHA-256 digests of admin bearer tokens in
	// the older format. They are read from bootstrap commands and snapshots
	// and at once turned into admin credentials (adoptAdminTokens); the
	// applied state keeps none here.
	AdminTokenVerifiers []string `json:"admin_token_verifiers,omitempty"`
}

// NodeRecord is one node's membership record.
type NodeRecord struct {
	Name        string `json:"name"`
	ReplicaID   uint64 `json:"replica_id"`
	Role        string `json:"role"` // "data" or "witness"
	Vote        string `json:"vote"` // "voter" or "non-voting"
	BackendAddr string `json:"backend_addr"`
	RaftAddr    string `json:"raft_addr"`
	AdminAddr   string `json:"admin_addr"`
	// ReplicationAddr receives replicated writes; NBDAddr serves exports.
	ReplicationAddr string `json:"replication_addr,omitempty"`
	NBDAddr         string `json:"nbd_addr,omitempty"`
	State           string `json:"state"`
	// Maintenance blocks new placements and evacuates the node's VMs.
	Maintenance bool         `json:"maintenance,omitempty"`
	Fence       *FenceConfig `json:"fence,omitempty"`
	// ConfirmedOffAt is when an operator confirmed the node is off (the
	// proposing node's clock: for display only).
	ConfirmedOffAt time.Time `json:"confirmed_off_at,omitzero"`
	// ConfirmedOffIndex is the Raft index of that confirmation. Recovery
	// orders it against when the leader last saw the node answer by index,
	// not by two nodes' clocks.
	ConfirmedOffIndex uint64    `json:"confirmed_off_index,omitempty"`
	JoinedAt          time.Time `json:"joined_at"`
	RemovedAt         time.Time `json:"removed_at,omitzero"`
	// RemovedBy is the member that recorded the removal, RemovedAs the API
	// credential it acted for (empty for removals recorded before these).
	RemovedBy string `json:"removed_by,omitempty"`
	RemovedAs string `json:"removed_as,omitempty"`
	// CertSerials are the serials (lower-case hex) of the node certificates
	// the cluster issued to this node; removal revokes them all.
	CertSerials []string `json:"cert_serials,omitempty"`
	// CertNotAfter is when the node's newest certificate expires (zero
	// for certificates issued before renewal existed).
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
	// Version and Protocol are the release the node last started with and
	// the highest cluster version it supports (upgrade.go); empty and 0
	// until it reports them.
	Version  string `json:"version,omitempty"`
	Protocol uint32 `json:"protocol,omitempty"`
	// Note is an operator's free text (feature node-notes).
	Note string `json:"note,omitempty"`
}

// TokenRecord is a one-time join token as the cluster stores it: only a
// verifier of the secret, never the secret.
type TokenRecord struct {
	ID        string    `json:"id"`
	Verifier  string    `json:"verifier"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedBy string    `json:"created_by"`
	UsedBy    string    `json:"used_by,omitempty"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

// AuditEntry records an administrative action.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	Action string    `json:"action"`
	Detail string    `json:"detail"`
	// Credential is the API credential the action was asked with
	// ("local@NODE" for the node's unix socket); empty for what nodes do
	// on their own.
	Credential string `json:"credential,omitempty"`
}

// MetaState is the whole content of the metadata shard.
type MetaState struct {
	Cluster       ClusterRecord           `json:"cluster"`
	Nodes         map[string]*NodeRecord  `json:"nodes"`
	Tokens        map[string]*TokenRecord `json:"tokens"`
	NextReplicaID uint64                  `json:"next_replica_id"`
	Volumes       map[string]*VolumeEntry `json:"volumes"`
	NextShardID   uint64                  `json:"next_shard_id"`
	VMs           map[string]*VMRecord    `json:"vms"`
	Events        []Event                 `json:"events,omitempty"`
	NextEventSeq  uint64                  `json:"next_event_seq,omitempty"`
	Config        map[string]string       `json:"config"`
	Audit         []AuditEntry            `json:"audit"`
	// ExportCerts are the issued export certificates by name (exportcert.go).
	ExportCerts map[string]*ExportCertRecord `json:"export_certs,omitempty"`
	// Revoked is the revocation list, by certificate serial (revocation.go).
	Revoked map[string]*RevokedCert `json:"revoked,omitempty"`
	// Credentials are the named API credentials, revoked ones included.
	Credentials map[string]*CredentialRecord `json:"credentials,omitempty"`
	// ClusterVersion is the feature level every member supports; 0 reads
	// as BaseClusterVersion (see Version and upgrade.go).
	ClusterVersion uint32 `json:"cluster_version,omitempty"`
	// Storage are the external storages by name (storage.go).
	Storage map[string]*StorageRecord `json:"storage,omitempty"`
	// Images are the ISO images by name (image.go); nil until the first.
	Images map[string]*ImageRecord `json:"images,omitempty"`
	// Applied is the last applied Raft index (not part of the replicated
	// content's meaning, useful to compare replicas).
	Applied uint64 `json:"applied"`
}

// Bootstrapped reports whether a cluster was created in this state.
func (s *MetaState) Bootstrapped() bool { return s.Cluster.ID != "" }

// NodeByReplica finds a node by its Raft replica ID.
func (s *MetaState) NodeByReplica(id uint64) *NodeRecord {
	for _, n := range s.Nodes {
		if n.ReplicaID == id {
			return n
		}
	}
	return nil
}

func (s *MetaState) clone() *MetaState { return cloneJSON(s) }

// Command is one replicated change. At and By come from the proposer so that
// time-dependent decisions (token expiry) are the same on every replica.
type Command struct {
	Op string    `json:"op"`
	At time.Time `json:"at"`
	By string    `json:"by"`
	// As is the API credential the proposer acted for (WithActor).
	As           string            `json:"as,omitempty"`
	Credential   *CredentialCmd    `json:"credential,omitempty"`
	Bootstrap    *BootstrapCmd     `json:"bootstrap,omitempty"`
	Token        *TokenRecord      `json:"token,omitempty"`
	Join         *JoinCmd          `json:"join,omitempty"`
	NodeState    *NodeStateCmd     `json:"node_state,omitempty"`
	Audit        *AuditEntry       `json:"audit,omitempty"`
	SetConfig    map[string]string `json:"set_config,omitempty"`
	AdminToken   string            `json:"admin_token,omitempty"`
	ForgetTokens bool              `json:"forget_tokens,omitempty"`
	Volume       *VolumeEntry      `json:"volume,omitempty"`
	VM           *VMRecord         `json:"vm,omitempty"`
	VMUpdate     *VMUpdate         `json:"vm_update,omitempty"`
	Maintenance  *MaintenanceCmd   `json:"maintenance,omitempty"`
	Event        *Event            `json:"event,omitempty"`
	VMHA         *VMHACmd          `json:"vm_ha,omitempty"`
	NodeFence    *NodeFenceCmd     `json:"node_fence,omitempty"`
	ExportCert   *ExportCertRecord `json:"export_cert,omitempty"`
	Revoke       *RevokedCert      `json:"revoke,omitempty"`
	NodeCert     *NodeCertCmd      `json:"node_cert,omitempty"`
	// Level is the protocol level the command needs (upgrade.go); 0 for
	// the base commands and in entries older than versions.
	Level       uint32          `json:"level,omitempty"`
	NodeVersion *NodeVersionCmd `json:"node_version,omitempty"`
	NodeNote    *NodeNoteCmd    `json:"node_note,omitempty"`
	Rejoin      *RejoinCmd      `json:"rejoin,omitempty"`
	VolumeHA    *VolumeHACmd    `json:"volume_ha,omitempty"`
	Storage     *StorageRecord  `json:"storage,omitempty"`
	VolumeRBD   *VolumeRBDCmd   `json:"volume_rbd,omitempty"`
	// StorageBlocklist records blocklisted Ceph clients (storage.go).
	StorageBlocklist *StorageBlocklistCmd `json:"storage_blocklist,omitempty"`
	// ISO images (image.go).
	Image   *ImageCmd   `json:"image,omitempty"`
	VMMedia *VMMediaCmd `json:"vm_media,omitempty"`
	VMSpec  *VMSpecCmd  `json:"vm_spec,omitempty"`
	VMNICs  *VMNICsCmd  `json:"vm_nics,omitempty"`
	VMDisks *VMDisksCmd `json:"vm_disks,omitempty"`
	VMNVRAM *VMNVRAMCmd `json:"vm_nvram,omitempty"`
	// Volume growth (grow.go).
	VolumeSize *VolumeSizeCmd `json:"volume_size,omitempty"`
}

// BootstrapCmd creates the cluster with its first node.
type BootstrapCmd struct {
	Cluster ClusterRecord `json:"cluster"`
	Node    NodeRecord    `json:"node"`
}

// JoinCmd consumes a join token and records the joining node.
type JoinCmd struct {
	TokenID  string     `json:"token_id"`
	Verifier string     `json:"verifier"`
	Node     NodeRecord `json:"node"`
}

// NodeStateCmd moves a node to a membership state.
type NodeStateCmd struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// Command ops.
const (
	opBootstrap     = "bootstrap"
	opAddToken      = "add-token"
	opJoin          = "join"
	opNodeState     = "node-state"
	opAudit         = "audit"
	opSetConfig     = "set-config"
	opAddAdminToken = "add-admin-token"
	opVolumeCreate  = "volume-create"
	opVolumeState   = "volume-state"
	opVolumeDelete  = "volume-delete"
)

// metaSM is the metadata state machine: small, in memory, snapshotted as JSON.
type metaSM struct {
	s *MetaState
	// certGen counts the applied changes that may revoke a certificate
	// accepted before (see certChanged); not part of the state, so not in
	// snapshots.
	certGen uint64
	// level is the highest protocol level this build applies; 0 means
	// version.ProtocolLevel (see supported).
	level uint32
	// pub is the shared read-only copy readers get (snapshot.go); nil
	// after a change until the next read. checkReaders verifies retired
	// copies were not mutated, counting those in readerMutations.
	pub             atomic.Pointer[publishedState]
	checkReaders    bool
	readerMutations atomic.Uint64
	log             *slog.Logger
}

// certChanged notes a change of what checkRevoked refuses: listeners then
// close the connections whose certificates are revoked now.
func (m *metaSM) certChanged() { m.certGen++ }

// NewMetaStateMachine is the dragonboat factory for the metadata shard, at
// this build's protocol level.
func NewMetaStateMachine(_, _ uint64) sm.IStateMachine {
	return &metaSM{s: emptyState()}
}

// metaStateMachineAt is the factory of a replica applying up to level.
func metaStateMachineAt(level uint32, checkReaders bool, log *slog.Logger) func(uint64, uint64) sm.IStateMachine {
	return func(uint64, uint64) sm.IStateMachine {
		return &metaSM{s: emptyState(), level: level, checkReaders: checkReaders, log: log}
	}
}

func emptyState() *MetaState {
	return &MetaState{Nodes: map[string]*NodeRecord{}, Tokens: map[string]*TokenRecord{}, Config: map[string]string{}, NextReplicaID: 1, Volumes: map[string]*VolumeEntry{}, NextShardID: FirstVolumeShard, VMs: map[string]*VMRecord{}}
}

func (m *metaSM) Update(e sm.Entry) (sm.Result, error) {
	// Every entry changes at least Applied: readers get a new copy. The
	// old one is retired after the apply, so that the check of checked
	// mode also catches an apply that changed a record it shares; and in
	// that mode the new copy is published at once, so every entry's apply
	// is checked, read or not.
	defer func() {
		m.retire()
		if m.checkReaders {
			m.published()
		}
	}()
	m.s.Applied = e.Index
	var c Command
	if err := json.Unmarshal(e.Cmd, &c); err != nil {
		return rejectWith(resultErrors, fmt.Errorf("%w: %v", ErrBadCommand, err)), nil
	}
	if c.Op != opBootstrap && m.s.Bootstrapped() {
		halt, refuse := m.gate(&c)
		if halt > 0 {
			// Returning an error stops dragonboat (and tandemd) here:
			// skipping the entry would diverge from the peers that
			// applied it.
			return sm.Result{}, m.haltError(e, &c, halt)
		}
		if refuse != nil {
			return rejectWith(resultErrors, refuse), nil
		}
	}
	data, err := m.apply(&c)
	if err != nil {
		return rejectWith(resultErrors, err), nil
	}
	return sm.Result{Value: 0, Data: data}, nil
}

// audit records an administrative action in the audit trail and, so that
// 'tandem events' tells the whole story next to what HA did, as an event
// of kind action.
func (m *metaSM) audit(c *Command, action, detail string) {
	m.s.Audit = append(m.s.Audit, AuditEntry{At: c.At, Node: c.By, Action: action, Detail: detail, Credential: c.As})
	if over := len(m.s.Audit) - maxAudit; over > 0 {
		m.s.Audit = append([]AuditEntry(nil), m.s.Audit[over:]...)
	}
	m.addEvent(Event{At: c.At, By: c.By, Kind: action, Detail: detail})
}

// addEvent numbers e and appends it to the bounded event log.
func (m *metaSM) addEvent(e Event) Event {
	s := m.s
	s.NextEventSeq++
	e.Seq = s.NextEventSeq
	s.Events = append(s.Events, e)
	if over := len(s.Events) - maxEvents; over > 0 {
		s.Events = append([]Event(nil), s.Events[over:]...)
	}
	return e
}

func (m *metaSM) apply(c *Command) ([]byte, error) {
	s := m.s
	if c.Op != opBootstrap && !s.Bootstrapped() {
		return nil, ErrNotBootstrapped
	}
	switch c.Op {
	case opBootstrap:
		if s.Bootstrapped() {
			if c.Bootstrap != nil && c.Bootstrap.Cluster.ID == s.Cluster.ID {
				return nil, nil // a retried bootstrap
			}
			return nil, ErrAlreadyBootstrapped
		}
		if c.Bootstrap == nil || c.Bootstrap.Cluster.ID == "" || c.Bootstrap.Node.Name == "" {
			return nil, fmt.Errorf("%w: bootstrap without cluster or node", ErrBadCommand)
		}
		s.Cluster = c.Bootstrap.Cluster
		n := c.Bootstrap.Node
		// The bootstrap admin token is written to the creating node.
		s.adoptAdminTokens(c.At, n.Name, n.Name)
		n.State = NodeMember
		n.JoinedAt = c.At
		s.Nodes[n.Name] = &n
		if n.ReplicaID >= s.NextReplicaID {
			s.NextReplicaID = n.ReplicaID + 1
		}
		m.audit(c, "cluster-create", fmt.Sprintf("cluster %q created with node %s", s.Cluster.Name, n.Name))
		// A creator that recorded its release in the bootstrap entry sets
		// the cluster version here; none below the base is ever set.
		m.raiseClusterVersion(c)
		return nil, nil
	case opAddToken:
		if c.Token == nil || c.Token.ID == "" || c.Token.Verifier == "" {
			return nil, fmt.Errorf("%w: token without id or verifier", ErrBadCommand)
		}
		t := *c.Token
		t.CreatedBy = c.By
		s.Tokens[t.ID] = &t
		m.expireTokens(c.At)
		m.audit(c, "token-create", fmt.Sprintf("join token %s, expires %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339)))
		return nil, nil
	case opJoin:
		j := c.Join
		retried, err := s.checkJoin(j, c.At)
		if err != nil {
			return nil, err
		}
		if retried != nil {
			// A retried admission signed a new certificate; the node
			// will use whichever answer reaches it.
			for _, serial := range j.Node.CertSerials {
				if !slices.Contains(retried.CertSerials, serial) {
					retried.CertSerials = append(retried.CertSerials, serial)
				}
			}
			return json.Marshal(retried.ReplicaID)
		}
		t := s.Tokens[j.TokenID]
		t.UsedBy = j.Node.Name
		t.UsedAt = c.At
		n := j.Node
		n.ReplicaID = s.NextReplicaID
		s.NextReplicaID++
		n.State = NodeJoining
		n.JoinedAt = c.At
		s.Nodes[n.Name] = &n
		m.audit(c, "node-join", fmt.Sprintf("node %s joining as replica %d with token %s", n.Name, n.ReplicaID, t.ID))
		return json.Marshal(n.ReplicaID)
	case opNodeState:
		ns := c.NodeState
		if ns == nil {
			return nil, fmt.Errorf("%w: node-state without body", ErrBadCommand)
		}
		n, ok := s.Nodes[ns.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, ns.Name)
		}
		switch ns.State {
		case NodeJoining, NodeMember, NodeRemoved:
		default:
			return nil, fmt.Errorf("%w: unknown node state %q", ErrBadCommand, ns.State)
		}
		prev := n.State
		if prev == ns.State {
			// A retried proposal: idempotent, and not worth an audit line.
			return json.Marshal(n)
		}
		n.State = ns.State
		if ns.State == NodeRemoved {
			n.RemovedAt = c.At
			n.RemovedBy, n.RemovedAs = c.By, c.As
			m.revokeNode(c, n)
			m.certChanged()
		}
		m.audit(c, "node-state", fmt.Sprintf("node %s: %s -> %s", n.Name, prev, n.State))
		if ns.State == NodeRemoved {
			m.revokeHeldBy(c, n.Name)
			// The node removed may have been the last on an older release.
			m.raiseClusterVersion(c)
		}
		return json.Marshal(n)
	case opAudit:
		if c.Audit == nil {
			return nil, fmt.Errorf("%w: audit without entry", ErrBadCommand)
		}
		m.audit(c, c.Audit.Action, c.Audit.Detail)
		return nil, nil
	case opSetConfig:
		for k, v := range c.SetConfig {
			if v == "" {
				delete(s.Config, k)
			} else {
				s.Config[k] = v
			}
			m.audit(c, "config-set", fmt.Sprintf("%s=%q", k, v))
		}
		return json.Marshal(s.Config)
	case opVolumeCreate:
		v := c.Volume
		if v == nil || v.Name == "" || v.Size <= 0 || (len(v.Replicas) == 0 && !v.IsRBD()) {
			return nil, fmt.Errorf("%w: volume-create needs a name, a size and replicas", ErrBadCommand)
		}
		if old, ok := s.Volumes[v.Name]; ok {
			if old.Created.Equal(c.At) && slices.Equal(old.Replicas, v.Replicas) && old.Backend == v.Backend {
				return json.Marshal(old) // a retried proposal
			}
			return nil, fmt.Errorf("%w: %s", ErrVolumeNameTaken, v.Name)
		}
		if err := checkVolumeHA(v.HA); err != nil {
			return nil, err
		}
		if v.IsRBD() {
			if err := s.checkRBDEntry(v); err != nil {
				return nil, err
			}
			e := *v
			e.ShardID, e.Epoch = 0, 1
			e.State = VolumeCreating
			e.Created = c.At
			s.Volumes[e.Name] = &e
			m.audit(c, "volume-create", fmt.Sprintf("volume %s (%d bytes) on RBD %s/%s (storage %s), owner %s", e.Name, e.Size, e.Pool, e.Image, e.Storage, e.Owner))
			return json.Marshal(&e)
		}
		if v.Backend != "" {
			return nil, fmt.Errorf("%w: unknown volume backend %q", ErrBadCommand, v.Backend)
		}
		for _, n := range append(slices.Clone(v.Replicas), v.Witness) {
			if n == "" {
				continue
			}
			if rec, ok := s.Nodes[n]; !ok || rec.State != NodeMember {
				return nil, fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, n)
			}
		}
		e := *v
		e.ShardID = s.NextShardID
		s.NextShardID++
		e.State = VolumeCreating
		e.Created = c.At
		s.Volumes[e.Name] = &e
		m.audit(c, "volume-create", fmt.Sprintf("volume %s (%d bytes) on %s, shard %d", e.Name, e.Size, strings.Join(e.Replicas, ","), e.ShardID))
		return json.Marshal(&e)
	case opVolumeState:
		if c.Volume == nil {
			return nil, fmt.Errorf("%w: volume-state without volume", ErrBadCommand)
		}
		e, ok := m.volumeForUpdate(c.Volume.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, c.Volume.Name)
		}
		switch c.Volume.State {
		case VolumeCreating, VolumeReady, VolumeDeleting:
		default:
			return nil, fmt.Errorf("%w: unknown volume state %q", ErrBadCommand, c.Volume.State)
		}
		e.State = c.Volume.State
		return json.Marshal(e)
	case opVolumeDelete:
		if c.Volume == nil {
			return nil, fmt.Errorf("%w: volume-delete without volume", ErrBadCommand)
		}
		if _, ok := s.Volumes[c.Volume.Name]; !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, c.Volume.Name)
		}
		for _, v := range s.VMs {
			if slices.Contains(v.Spec.Volumes, c.Volume.Name) {
				return nil, fmt.Errorf("%w: volume %s is a disk of VM %s", ErrBadCommand, c.Volume.Name, v.Name)
			}
		}
		delete(s.Volumes, c.Volume.Name)
		m.audit(c, "volume-delete", "volume "+c.Volume.Name)
		return nil, nil
	case opAddAdminToken:
		if len(c.AdminToken) != 64 {
			return nil, fmt.Errorf("%w: admin token verifier must be 64 hex digits", ErrBadCommand)
		}
		// Older format, kept so old logs replay: an admin credential now.
		s.Cluster.AdminTokenVerifiers = []string{c.AdminToken}
		s.adoptAdminTokens(c.At, c.By, "")
		m.audit(c, "admin-token-add", "admin token added")
		return nil, nil
	case opCredentialCreate, opCredentialRevoke:
		return m.applyCredential(c)
	case opVMCreate, opVMUpdate, opVMDelete, opMaintenance:
		return m.applyVM(c)
	case opEvent, opVMHA, opNodeFence:
		return m.applyHA(c)
	case opExportCertAdd:
		return m.applyExportCert(c)
	case opRevokeCert:
		return m.applyRevocation(c)
	case opNodeCert:
		return m.applyNodeCert(c)
	case opNodeVersion, opNodeNote:
		return m.applyVersions(c)
	case opNodeRejoin:
		return m.applyRejoin(c)
	case opVolumeHA:
		return m.applyVolumeHA(c)
	case opStorageAdd, opStorageRemove, opVolumeRBD, opStorageBlocklist:
		return m.applyStorage(c)
	case opImageCreate, opImageCopy, opImageDelete, opVMMedia, opVMNVRAM:
		return m.applyImage(c)
	case opVolumeSize:
		return m.applyVolumeSize(c)
	case opVMSpec:
		return m.applyVMSpec(c)
	case opVMNICs:
		return m.applyVMNICs(c)
	case opVMDisks:
		return m.applyVMDisks(c)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

// checkJoin is every check of a join, shared by the state machine (which
// decides) and the read-only pre-check the member runs before proposing
// (Meta.CheckJoin), so that both always agree. retried is the node when the
// same node asks again with the token it already consumed: proposals are
// retried after a timeout and may commit twice, and the same node gets the
// same answer.
func (s *MetaState) checkJoin(j *JoinCmd, at time.Time) (retried *NodeRecord, err error) {
	if j == nil || j.Node.Name == "" {
		return nil, fmt.Errorf("%w: join without node", ErrBadCommand)
	}
	t, ok := s.Tokens[j.TokenID]
	if !ok || subtle.ConstantTimeCompare([]byte(t.Verifier), []byte(j.Verifier)) != 1 {
		return nil, ErrTokenInvalid
	}
	if t.UsedBy != "" {
		if n, ok := s.Nodes[j.Node.Name]; ok && t.UsedBy == j.Node.Name && n.State == NodeJoining && n.RaftAddr == j.Node.RaftAddr {
			return n, nil
		}
		return nil, fmt.Errorf("%w (by %s)", ErrTokenUsed, t.UsedBy)
	}
	if !at.Before(t.ExpiresAt) {
		return nil, ErrTokenExpired
	}
	if old, ok := s.Nodes[j.Node.Name]; ok && old.State != NodeRemoved {
		return nil, fmt.Errorf("%w: %s", ErrNodeExists, j.Node.Name)
	}
	return nil, nil
}

// expireTokens drops tokens a day past their expiry so the set stays small.
func (m *metaSM) expireTokens(now time.Time) {
	maps.DeleteFunc(m.s.Tokens, func(_ string, t *TokenRecord) bool {
		return now.Sub(t.ExpiresAt) > 24*time.Hour
	})
}

// Lookup answers queries: the whole state (the shared read-only copy,
// snapshot.go), the revocation check
// of one certificate (an error value, nil when accepted), or the verdict on
// a join (joinQuery); the last two read the state without copying it.
func (m *metaSM) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case stateQuery:
		return m.published(), nil
	case readerMutationsQuery:
		return m.readerMutations.Load(), nil
	case certQuery:
		if q.revokedOnly {
			_, err := m.s.checkRevoked(q.ref)
			return err, nil
		}
		return m.s.checkCert(q.ref), nil
	case appliedQuery:
		return m.s.Applied, nil
	case certGenQuery:
		return m.certGen, nil
	case joinQuery:
		if !m.s.Bootstrapped() {
			return joinVerdict{err: ErrNotBootstrapped}, nil
		}
		_, err := m.s.checkJoin(&q.join, q.at)
		return joinVerdict{err: err}, nil
	case rejoinQuery:
		return m.s.lookupRejoin(q), nil
	}
	return nil, fmt.Errorf("unknown metadata query %T", q)
}

type stateQuery struct{}

// appliedQuery asks for the last applied index (AppliedIndex).
type appliedQuery struct{}

// AppliedIndex is the last Raft index this replica applied to the
// metadata: a local read that copies nothing. Entries at or below it are
// in every later LocalState of this replica.
func (m *Meta) AppliedIndex() (uint64, error) {
	v, err := m.h.StaleRead(MetaShardID, appliedQuery{})
	if err != nil {
		return 0, fmt.Errorf("metadata not readable yet: %w", err)
	}
	idx, _ := v.(uint64)
	return idx, nil
}

// joinQuery asks whether a join would be accepted at time at.
type joinQuery struct {
	join JoinCmd
	at   time.Time
}

// joinVerdict is the answer to a joinQuery: the refusal travels as a value,
// since a read's error is taken for a failed read and retried.
type joinVerdict struct{ err error }

func (m *metaSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(m.s)
}

func (m *metaSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read metadata snapshot: %w", err)
	}
	s := emptyState()
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(s); err != nil {
		return fmt.Errorf("corrupt metadata snapshot: %w", err)
	}
	if s.Nodes == nil || s.Tokens == nil || s.Config == nil {
		return errors.New("corrupt metadata snapshot: missing maps")
	}
	if s.Volumes == nil { // snapshots from before volumes existed
		s.Volumes = map[string]*VolumeEntry{}
		s.NextShardID = max(s.NextShardID, FirstVolumeShard)
	}
	if s.VMs == nil {
		s.VMs = map[string]*VMRecord{}
	}
	// Snapshots from before named credentials: the admin tokens become
	// admin credentials (whom they were handed to is not known).
	if len(s.Cluster.AdminTokenVerifiers) > 0 {
		s.adoptAdminTokens(s.Cluster.CreatedAt, "", "")
	}
	m.retire()
	m.s = s
	m.certChanged()
	return nil
}

func (m *metaSM) Close() error { return nil }

// Meta is the typed client of the metadata shard on one host.
type Meta struct {
	h    *Host
	node string
	now  func() time.Time
	// level is the protocol level of this build (version.ProtocolLevel),
	// the highest its replica applies and its proposals may need.
	level uint32
}

// NewMeta returns the metadata client for the node named node.
func NewMeta(h *Host, node string) *Meta {
	return &Meta{h: h, node: node, now: time.Now, level: version.ProtocolLevel()}
}

// Host returns the Raft host the client uses.
func (m *Meta) Host() *Host { return m.h }

// Start starts this host's replica of the metadata shard.
func (m *Meta) Start(replicaID uint64, members map[uint64]string, join bool, role Role) error {
	return m.h.StartShard(ShardSpec{ShardID: MetaShardID, ReplicaID: replicaID, Members: members, Join: join, Role: role}, metaStateMachineAt(m.level, m.h.cfg.CheckMetaReaders, m.h.log))
}

func (m *Meta) propose(ctx context.Context, c Command) ([]byte, error) {
	c.At = m.now().UTC()
	c.By = m.node
	c.As = ActorFrom(ctx)
	if l := opLevel(c.Op); l > BaseClusterVersion {
		c.Level = l
		if err := m.checkGate(ctx, c.Op); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Op, err)
	}
	res, err := m.h.Propose(ctx, MetaShardID, b)
	if err != nil {
		return nil, err
	}
	if err := resultError(resultErrors, res); err != nil {
		return nil, err
	}
	return res.Data, nil
}

// proposeAs proposes c and decodes the state machine's answer as a T.
func proposeAs[T any](ctx context.Context, m *Meta, c Command, what string) (*T, error) {
	data, err := m.propose(ctx, c)
	if err != nil {
		return nil, err
	}
	var out T
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return &out, nil
}

// Bootstrap records a new cluster with its first node.
func (m *Meta) Bootstrap(ctx context.Context, c ClusterRecord, n NodeRecord) error {
	_, err := m.propose(ctx, Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: c, Node: n}})
	return err
}

// AddToken stores a join token's verifier.
func (m *Meta) AddToken(ctx context.Context, t TokenRecord) error {
	_, err := m.propose(ctx, Command{Op: opAddToken, Token: &t})
	return err
}

// Join consumes a join token and records n as joining; it returns n's new replica ID.
func (m *Meta) Join(ctx context.Context, tokenID, verifier string, n NodeRecord) (uint64, error) {
	data, err := m.propose(ctx, Command{Op: opJoin, Join: &JoinCmd{TokenID: tokenID, Verifier: verifier, Node: n}})
	if err != nil {
		return 0, err
	}
	var id uint64
	if err := json.Unmarshal(data, &id); err != nil {
		return 0, fmt.Errorf("decode join result: %w", err)
	}
	return id, nil
}

// CheckJoin runs the state machine's checks of a join (token known, secret
// right, not used, not expired, name free) on the committed state through a
// linearizable read, without proposing anything: a bogus join costs no Raft
// entry. It returns nil when Join would be accepted now; Join checks again
// when it applies, and that check stays the authority.
func (m *Meta) CheckJoin(ctx context.Context, tokenID, verifier string, n NodeRecord) error {
	v, err := m.h.Read(ctx, MetaShardID, joinQuery{join: JoinCmd{TokenID: tokenID, Verifier: verifier, Node: n}, at: m.now().UTC()})
	if err != nil {
		return err
	}
	verdict, ok := v.(joinVerdict)
	if !ok {
		return fmt.Errorf("%w: join check answered %T", ErrBadCommand, v)
	}
	return verdict.err
}

// SetNodeState moves a node to joining, member or removed.
func (m *Meta) SetNodeState(ctx context.Context, name, state string) (NodeRecord, error) {
	data, err := m.propose(ctx, Command{Op: opNodeState, NodeState: &NodeStateCmd{Name: name, State: state}})
	if err != nil {
		return NodeRecord{}, err
	}
	var n NodeRecord
	if err := json.Unmarshal(data, &n); err != nil {
		return NodeRecord{}, fmt.Errorf("decode node: %w", err)
	}
	return n, nil
}

// Audit appends an entry to the replicated audit trail.
func (m *Meta) Audit(ctx context.Context, action, detail string) error {
	_, err := m.propose(ctx, Command{Op: opAudit, Audit: &AuditEntry{Action: action, Detail: detail}})
	return err
}

// SetConfig sets cluster configuration keys; an empty value deletes the key.
func (m *Meta) SetConfig(ctx context.Context, kv map[string]string) error {
	_, err := m.SetConfigResult(ctx, kv)
	return err
}

// SetConfigResult is SetConfig returning the whole configuration as
// committed by this change (no second read needed).
func (m *Meta) SetConfigResult(ctx context.Context, kv map[string]string) (map[string]string, error) {
	data, err := m.propose(ctx, Command{Op: opSetConfig, SetConfig: kv})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	return out, nil
}

// CreateVolume reserves a volume name and allocates its shard ID.
func (m *Meta) CreateVolume(ctx context.Context, v VolumeEntry) (*VolumeEntry, error) {
	data, err := m.propose(ctx, Command{Op: opVolumeCreate, Volume: &v})
	if err != nil {
		return nil, err
	}
	var e VolumeEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode volume: %w", err)
	}
	return &e, nil
}

// SetVolumeState moves a catalog entry to creating, ready or deleting.
func (m *Meta) SetVolumeState(ctx context.Context, name, state string) error {
	_, err := m.propose(ctx, Command{Op: opVolumeState, Volume: &VolumeEntry{Name: name, State: state}})
	return err
}

// DeleteVolume removes a catalog entry.
func (m *Meta) DeleteVolume(ctx context.Context, name string) error {
	_, err := m.propose(ctx, Command{Op: opVolumeDelete, Volume: &VolumeEntry{Name: name}})
	return err
}

// State is a linearizable read of the whole metadata state. The result is
// shared with other readers and must not be mutated (snapshot.go).
func (m *Meta) State(ctx context.Context) (*MetaState, error) {
	v, err := m.h.Read(ctx, MetaShardID, stateQuery{})
	if err != nil {
		return nil, err
	}
	return v.(*MetaState), nil
}

// LocalState reads this replica's state without quorum; it may be stale.
// It copies nothing: the result is shared with other readers until the
// next applied entry and must not be mutated (snapshot.go); use Clone to
// get a copy to change.
func (m *Meta) LocalState() (*MetaState, error) {
	v, err := m.h.StaleRead(MetaShardID, stateQuery{})
	if err != nil {
		return nil, err
	}
	return v.(*MetaState), nil
}
