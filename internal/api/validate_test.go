package api

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
	"github.com/tandemhci/tandem/internal/vmm"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// journalMeta is the metadata as the volume and VM managers see it: one
// cluster of n1 holding volume v1, every change journaled.
type journalMeta struct {
	j  *statetest.Journal
	ms *consensus.MetaState
}

func (m journalMeta) State(context.Context) (*consensus.MetaState, error) { return m.ms, nil }
func (m journalMeta) LocalState() (*consensus.MetaState, error)           { return m.ms, nil }
func (m journalMeta) Audit(_ context.Context, action, _ string) error {
	m.j.Add("audit %s", action)
	return nil
}

func (m journalMeta) CreateVolume(_ context.Context, v consensus.VolumeEntry) (*consensus.VolumeEntry, error) {
	m.j.Add("create-volume %s", v.Name)
	return &v, nil
}

func (m journalMeta) SetVolumeHA(_ context.Context, name, mode string) (*consensus.VolumeEntry, error) {
	m.j.Add("volume-ha %s %s", name, mode)
	return &consensus.VolumeEntry{Name: name, HA: mode}, nil
}

func (m journalMeta) SetVolumeState(_ context.Context, name, st string) error {
	m.j.Add("volume-state %s %s", name, st)
	return nil
}

func (m journalMeta) DeleteVolume(_ context.Context, name string) error {
	m.j.Add("delete-volume %s", name)
	return nil
}

func (m journalMeta) AddExportCert(_ context.Context, r consensus.ExportCertRecord) (*consensus.ExportCertRecord, error) {
	m.j.Add("export-cert %s", r.Name)
	return &r, nil
}

func (m journalMeta) RevokeCert(_ context.Context, r consensus.RevokedCert) error {
	m.j.Add("revoke %s", r.Serial)
	return nil
}

func (m journalMeta) CreateVM(_ context.Context, v consensus.VMRecord) (*consensus.VMRecord, error) {
	m.j.Add("create-vm %s", v.Name)
	return &v, nil
}

// checkedServices are the real admin and peer services over real volume
// and VM managers on the journaling metadata; nothing may reach a peer.
func checkedServices(t *testing.T) (*grpc.ClientConn, *statetest.Journal, string) {
	t.Helper()
	j := &statetest.Journal{}
	ms := &consensus.MetaState{
		Cluster: consensus.ClusterRecord{ID: "c1", Name: "c"},
		Nodes:   map[string]*consensus.NodeRecord{"n1": {Name: "n1", State: consensus.NodeMember, BackendAddr: "10.0.0.1:7000"}},
		Volumes: map[string]*consensus.VolumeEntry{"v1": {Name: "v1", ShardID: 1000, Size: 1 << 20, Replicas: []string{"n1"}, State: consensus.VolumeReady}},
		VMs:     map[string]*consensus.VMRecord{}, Tokens: map[string]*consensus.TokenRecord{}, Config: map[string]string{},
	}
	meta := journalMeta{j: j, ms: ms}
	dir := t.TempDir()
	quorate := true
	st := &state.State{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Node: state.Node{Name: "n1", DataDir: dir}, Config: config.Config{DataDir: dir},
		Meta:   func() state.Meta { return nil },
		Quorum: statetest.Quorum(&quorate),
		Peer: func(addr string) (tandemv1.PeerClient, error) {
			j.Add("peer %s", addr)
			return nil, status.Error(codes.Unavailable, "no peers in this test")
		},
		Cluster: func() (state.Cluster, bool) { return state.Cluster{Name: "c", ID: "c1"}, true },
		Now:     time.Now,
		Fence:   &state.SelfFence{},
	}
	vols := volume.New(t.Context(), volume.Config{State: st, Meta: func() volume.Meta { return meta }, ReplicaID: func() uint64 { return 1 },
		NBDSocket: dir + "/nbd.sock", QuorumTimeout: time.Second})
	vms := vmm.New(vmm.Config{State: st, Volumes: vols, Meta: func() vmm.Meta { return vmMeta{journalMeta: meta} }, Background: t.Context()})
	cc, stop := serve(t, Config{State: st, Volumes: vols, VMs: vms, Node: Node{ReplicaID: func() uint64 { return 1 }}})
	t.Cleanup(stop)
	return cc, j, dir
}

// vmMeta is the journaling metadata as the VM manager's client; the calls
// it makes that the journal does not know panic through the nil interface.
type vmMeta struct {
	vmm.Meta
	journalMeta
}

func (m vmMeta) State(ctx context.Context) (*consensus.MetaState, error) {
	return m.journalMeta.State(ctx)
}
func (m vmMeta) LocalState() (*consensus.MetaState, error)    { return m.journalMeta.LocalState() }
func (m vmMeta) Audit(ctx context.Context, a, d string) error { return m.journalMeta.Audit(ctx, a, d) }
func (m vmMeta) CreateVM(ctx context.Context, v consensus.VMRecord) (*consensus.VMRecord, error) {
	return m.journalMeta.CreateVM(ctx, v)
}

// Every rule, at the API: bad names (/, .., NUL, 300 characters, control
// characters), sizes (negative, zero, unaligned, huge), checksum bounds and
// host paths get InvalidArgument with the rule's text, on the admin and
// the peer services alike, and change nothing: no metadata call, no peer
// call, no file in the data directory.
func TestBadInputRefusedAtTheAPI(t *testing.T) {
	cc, j, dir := checkedServices(t)
	vol, vm, peer, node, clus := tandemv1.NewVolumeClient(cc), tandemv1.NewVMClient(cc), tandemv1.NewPeerClient(cc), tandemv1.NewNodeClient(cc), tandemv1.NewClusterClient(cc)
	long := strings.Repeat("x", 300)
	stream := func(s grpc.ClientStream, err error) error {
		if err != nil {
			return err
		}
		return s.RecvMsg(new(tandemv1.ConsoleChunk))
	}
	cases := []struct {
		name string
		call func(ctx context.Context) error
		msg  string
	}{
		{"volume name with /", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "a/b", SizeBytes: 1 << 20})
			return err
		}, `volume name "a/b" contains '/'`},
		{"volume name ..", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "..", SizeBytes: 1 << 20})
			return err
		}, `volume name ".." contains '..'`},
		{"volume name with NUL", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "a\x00b", SizeBytes: 1 << 20})
			return err
		}, `volume name "a\x00b" contains a NUL byte`},
		{"volume name of 300 characters", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: long, SizeBytes: 1 << 20})
			return err
		}, "is 300 characters; at most 63"},
		{"negative size", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "ok", SizeBytes: -4096})
			return err
		}, "size -4 KiB (-4096 bytes): must be a positive multiple of 4 KiB"},
		{"zero size", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "ok"})
			return err
		}, "size 0 B (0 bytes): must be a positive multiple of 4 KiB"},
		{"huge size", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "ok", SizeBytes: 1 << 62})
			return err
		}, "size 4 EiB is over the 64 TiB limit"},
		{"unknown HA policy", func(ctx context.Context) error {
			_, err := vol.Create(ctx, &tandemv1.CreateVolumeRequest{Name: "ok", SizeBytes: 1 << 20, Ha: "sometimes"})
			return err
		}, `volume HA policy "sometimes": must be auto or manual`},
		{"set an unknown HA policy", func(ctx context.Context) error {
			_, err := vol.Set(ctx, &tandemv1.SetVolumeRequest{Name: "v1", Ha: "AUTO"})
			return err
		}, `volume HA policy "AUTO": must be auto or manual`},
		{"set on a volume with /", func(ctx context.Context) error {
			_, err := vol.Set(ctx, &tandemv1.SetVolumeRequest{Name: "a/b", Ha: "manual"})
			return err
		}, `volume name "a/b" contains '/'`},
		{"show ../", func(ctx context.Context) error {
			_, err := vol.Show(ctx, &tandemv1.ShowVolumeRequest{Name: "../v1"})
			return err
		}, `volume name "../v1" contains '/'`},
		{"delete with a control character", func(ctx context.Context) error {
			_, err := vol.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: "v1\n"})
			return err
		}, "contains a control character"},
		{"promote to a bad node", func(ctx context.Context) error {
			_, err := vol.Promote(ctx, &tandemv1.PromoteVolumeRequest{Name: "v1", Node: "../n1"})
			return err
		}, `node name "../n1" contains '/'`},
		{"export certificate for a volume with /", func(ctx context.Context) error {
			_, err := vol.IssueExportCert(ctx, &tandemv1.IssueExportCertRequest{Name: "backup", Volumes: []string{"v1", "../v2"}, CsrPem: []byte("x")})
			return err
		}, `volume name "../v2" contains '/'`},
		{"export certificate name with NUL", func(ctx context.Context) error {
			_, err := vol.RevokeExportCert(ctx, &tandemv1.RevokeExportCertRequest{Name: "a\x00"})
			return err
		}, `export certificate name "a\x00" contains a NUL byte`},
		{"VM name with /", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "../etc", Vcpus: 1, MemoryMib: 128, Kernel: "/boot/vmlinuz"})
			return err
		}, `VM name "../etc" contains '/'`},
		{"VM disk of negative size", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 128, Disks: []*tandemv1.VMDisk{{SizeBytes: 1 << 20}, {SizeBytes: -1}}})
			return err
		}, "disks[1]: size -1 B (-1 bytes)"},
		{"VM disk volume with /", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 128, Disks: []*tandemv1.VMDisk{{Volume: "v1/../x"}}})
			return err
		}, `volume name "v1/../x" contains '/'`},
		{"VM disk without size", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 128, Disks: []*tandemv1.VMDisk{{SizeBytes: 1 << 20}, {}}})
			return err
		}, "disk 1: size 0 B (0 bytes): must be a positive multiple of 4 KiB"},
		{"VM name too long for its disks", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: strings.Repeat("w", 63), Vcpus: 1, MemoryMib: 128, Disks: []*tandemv1.VMDisk{{SizeBytes: 1 << 20}}})
			return err
		}, "give the VM a name of at most 57 characters"},
		{"relative kernel", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 128, Kernel: "vmlinuz"})
			return err
		}, `kernel path "vmlinuz" must be absolute`},
		{"initrd with ..", func(ctx context.Context) error {
			_, err := vm.Create(ctx, &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 128, Kernel: "/boot/k", Initrd: "/boot/../etc/shadow"})
			return err
		}, `initrd path "/boot/../etc/shadow" must be clean`},
		{"console of ../", func(ctx context.Context) error {
			return stream(vm.Console(ctx, &tandemv1.ConsoleRequest{Name: "../../etc/passwd"}))
		}, `VM name "../../etc/passwd" contains '/'`},
		{"remove a bad node name", func(ctx context.Context) error {
			_, err := node.Remove(ctx, &tandemv1.RemoveNodeRequest{Name: "n1\x00"})
			return err
		}, "contains a NUL byte"},
		{"cluster name", func(ctx context.Context) error {
			_, err := clus.Create(ctx, &tandemv1.CreateClusterRequest{Name: "a/b"})
			return err
		}, `cluster name "a/b" contains '/'`},
		// The peer side.
		{"checksum block 1", func(ctx context.Context) error {
			_, err := peer.VolumeChecksum(ctx, &tandemv1.VolumeChecksumRequest{Name: "v1", Offset: 0, Length: 64 << 20, Block: 1})
			return err
		}, "checksum block 1 bytes: must be a power of two from 4 KiB to 64 MiB"},
		{"checksum block not a power of two", func(ctx context.Context) error {
			_, err := peer.VolumeChecksum(ctx, &tandemv1.VolumeChecksumRequest{Name: "v1", Length: 4096, Block: 12288})
			return err
		}, "checksum block 12288 bytes"},
		{"checksum negative offset", func(ctx context.Context) error {
			_, err := peer.VolumeChecksum(ctx, &tandemv1.VolumeChecksumRequest{Name: "v1", Offset: -4096, Length: 4096, Block: 4096})
			return err
		}, "checksum offset -4096: must not be negative"},
		{"checksum without block", func(ctx context.Context) error {
			_, err := peer.VolumeChecksum(ctx, &tandemv1.VolumeChecksumRequest{Name: "v1", Length: 4096})
			return err
		}, "checksum block 0 bytes"},
		{"open a replica named ../", func(ctx context.Context) error {
			_, err := peer.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Create: true, Volume: &tandemv1.PeerVolume{Name: "../../escape", ShardId: 1001, SizeBytes: 1 << 20, Replicas: []string{"n1"}}})
			return err
		}, `volume name "../../escape" contains '/'`},
		{"open a replica of negative size", func(ctx context.Context) error {
			_, err := peer.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Create: true, Volume: &tandemv1.PeerVolume{Name: "v2", ShardId: 1001, SizeBytes: -1 << 20, Replicas: []string{"n1"}}})
			return err
		}, "size -1 MiB"},
		{"destroy a replica named ../", func(ctx context.Context) error {
			_, err := peer.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: "../volumes", Destroy: true})
			return err
		}, `volume name "../volumes" contains '/'`},
		{"peer console of ../", func(ctx context.Context) error {
			return stream(peer.VMConsole(ctx, &tandemv1.ConsoleRequest{Name: "../x"}))
		}, `VM name "../x" contains '/'`},
		{"start a VM with a relative kernel", func(ctx context.Context) error {
			_, err := peer.VMStart(ctx, &tandemv1.PeerVMRequest{Vm: &tandemv1.VMInfo{Name: "web", Kernel: "k"}})
			return err
		}, `kernel path "k" must be absolute`},
		{"compute info of a relative path", func(ctx context.Context) error {
			_, err := peer.ComputeInfo(ctx, &tandemv1.ComputeInfoRequest{Paths: []string{"etc/shadow"}})
			return err
		}, `file path "etc/shadow" must be absolute`},
	}
	files := func() string {
		var names []string
		_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, _ error) error {
			names = append(names, p)
			return nil
		})
		return strings.Join(names, " ")
	}
	before := files()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := c.call(ctx)
			if !statetest.IsStatus(err, codes.InvalidArgument, c.msg) {
				t.Fatalf("got %v, want InvalidArgument %q", err, c.msg)
			}
			if calls := j.List(); len(calls) != 0 {
				t.Fatalf("a refused request changed %q", calls)
			}
			if now := files(); now != before {
				t.Fatalf("a refused request changed the data directory: %s, was %s", now, before)
			}
		})
	}
	// Good input passes the check and reaches the service.
	if _, err := vol.Show(t.Context(), &tandemv1.ShowVolumeRequest{Name: "nosuch"}); status.Code(err) != codes.NotFound {
		t.Fatalf("show of a valid name: %v, want NotFound from the service", err)
	}
	if _, err := peer.VolumeChecksum(t.Context(), &tandemv1.VolumeChecksumRequest{Name: "nosuch", Length: 4096, Block: 4096}); status.Code(err) != codes.NotFound {
		t.Fatalf("checksum of a valid request: %v, want NotFound from the service", err)
	}
}

// Every request field that names a volume, a VM or a node, sizes a volume,
// bounds a checksum or points at a host file has a rule, so a field added
// later is not forgotten: it must get a rule here or be listed as checked
// elsewhere, with the reason.
func TestEveryNameFieldHasARule(t *testing.T) {
	checkedElsewhere := map[protoreflect.FullName]string{
		// Admit checks it after the join rate limit, so that a flood of bad
		// names is limited and counted like any other bad join.
		"tandem.v1.PeerJoinRequest.node_name": "membership.Admit",
		// A filter: an unknown node matches no entry.
		"tandem.v1.AuditRequest.node": "a filter",
	}
	suspicious := map[protoreflect.Name]bool{"name": true, "node": true, "nodes": true, "node_name": true, "volume": true, "volumes": true,
		"to": true, "from": true, "replicas": true, "witness": true, "discard_node": true, "kernel": true, "initrd": true, "paths": true,
		"size_bytes": true, "offset": true, "length": true, "block": true}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || md.ParentFile().Package() != "tandem.v1" {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			f := md.Fields().Get(i)
			if f.Kind() == protoreflect.MessageKind {
				walk(f.Message())
				continue
			}
			if f.Kind() != protoreflect.StringKind && f.Kind() != protoreflect.Int64Kind || !suspicious[f.Name()] {
				continue
			}
			if _, ok := fieldRule(f.FullName()); !ok && checkedElsewhere[f.FullName()] == "" {
				t.Errorf("request field %s has no rule in fieldRule (internal/api/validate.go)", f.FullName())
			}
		}
	}
	services := tandemv1.File_tandem_v1_tandem_proto.Services()
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for k := range methods.Len() {
			walk(methods.Get(k).Input())
		}
	}
}
