package vmm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// UEFI variables (issue 18). A UEFI VM's variable store (OVMF_VARS, 528
// KiB) lives in its VM record, gzip-compressed (a few KiB: the store is
// mostly empty), not in one node's /var. The node that runs the VM keeps
// a working file <data_dir>/vms/NAME_VARS.fd that QEMU writes; the run
// loop records it whenever it changed (checked every second), a live
// migration records it and writes it to the target before QEMU starts
// there, and every start (a failover's too) writes the file from the
// record. A failover loses at most the changes of the last second.

// fileSeen is a file's size and modification time.
type fileSeen struct {
	size  int64
	mtime time.Time
}

// nvramPath is where a VM's variable store is on this node.
func (m *Manager) nvramPath(name string) string {
	return filepath.Join(m.st.Config.DataDir, "vms", name+"_VARS.fd")
}

// prepareNVRAM writes a UEFI VM's variable store file here from its
// record (or OVMF's template for a new VM) unless the VM already runs
// here, and returns its path; "" for a BIOS VM.
func (m *Manager) prepareNVRAM(ctx context.Context, drv *compute.Driver, vm *tandemv1.VMInfo) (string, error) {
	if vm.Firmware != compute.FirmwareUEFI {
		return "", nil
	}
	p := m.nvramPath(vm.Name)
	if st, err := drv.State(ctx, vm.Name); err == nil && (st == compute.StateRunning || st == compute.StatePaused) {
		return p, nil // QEMU owns the file
	}
	ms, _, err := m.fresh(ctx)
	if err != nil {
		return "", err
	}
	v, err := vmOf(ms, vm.Name)
	if err != nil {
		return "", err
	}
	var raw []byte
	if v.NVRAM != nil {
		if raw, err = gunzipNVRAM(v.NVRAM); err != nil {
			return "", status.Errorf(codes.DataLoss, "VM %s: its recorded NVRAM: %v", vm.Name, err)
		}
	} else if raw, err = os.ReadFile(compute.OVMFVars); err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "node %s: UEFI needs OVMF (Debian package ovmf): %v", m.self(), err)
	}
	if err := writeFileAtomic(p, raw); err != nil {
		return "", status.Errorf(codes.Internal, "node %s: writing the NVRAM of %s: %v", m.self(), vm.Name, err)
	}
	m.forgetNVRAM(vm.Name)
	return p, nil
}

func writeFileAtomic(p string, b []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		_ = f.Sync()
		f.Close()
	}
	return os.Rename(tmp, p)
}

func gunzipNVRAM(b *consensus.NVRAMBlob) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b.Gzip))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:]) != b.SHA256 {
		return nil, errors.New("its SHA-256 does not match the record")
	}
	return raw, nil
}

func gzipNVRAM(raw []byte) (consensus.NVRAMBlob, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(raw); err != nil {
		return consensus.NVRAMBlob{}, err
	}
	if err := zw.Close(); err != nil {
		return consensus.NVRAMBlob{}, err
	}
	sum := sha256.Sum256(raw)
	return consensus.NVRAMBlob{Gzip: buf.Bytes(), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (m *Manager) forgetNVRAM(name string) {
	m.nvmu.Lock()
	delete(m.nvSeen, name)
	m.nvmu.Unlock()
}

// syncNVRAMs records the variable store of every UEFI VM running here
// whose file changed since it was last recorded.
func (m *Manager) syncNVRAMs(ctx context.Context, ms *consensus.MetaState) {
	for name, v := range ms.VMs {
		if v.Spec.Firmware != compute.FirmwareUEFI || !m.ours(ms, name) {
			continue
		}
		if _, err := m.syncNVRAM(ctx, v, false); err != nil {
			m.log.Warn("cannot record a UEFI VM's NVRAM", "vm", name, "err", err)
		}
	}
}

// syncNVRAM records v's variable store from this node's file when it
// changed (always with force) and returns the blob as recorded now.
func (m *Manager) syncNVRAM(ctx context.Context, v *consensus.VMRecord, force bool) (*consensus.NVRAMBlob, error) {
	p := m.nvramPath(v.Name)
	fi, err := os.Stat(p)
	if err != nil {
		return v.NVRAM, err
	}
	seen := fileSeen{size: fi.Size(), mtime: fi.ModTime()}
	m.nvmu.Lock()
	last, ok := m.nvSeen[v.Name]
	m.nvmu.Unlock()
	if ok && last == seen && !force {
		return v.NVRAM, nil
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return v.NVRAM, err
	}
	blob, err := gzipNVRAM(raw)
	if err != nil {
		return v.NVRAM, err
	}
	if v.NVRAM == nil || v.NVRAM.SHA256 != blob.SHA256 {
		meta, err := m.meta()
		if err != nil {
			return v.NVRAM, err
		}
		if _, err := meta.SetVMNVRAM(ctx, v.Name, m.self(), blob); err != nil {
			return v.NVRAM, err
		}
		m.log.Info("UEFI NVRAM recorded", "vm", v.Name, "sha256", blob.SHA256, "gzip_bytes", len(blob.Gzip))
	}
	m.nvmu.Lock()
	m.nvSeen[v.Name] = seen
	m.nvmu.Unlock()
	return &blob, nil
}

// handNVRAM records the variable store of a UEFI VM about to migrate and
// writes it to the target; it returns the target's path.
func (m *Manager) handNVRAM(ctx context.Context, vm *tandemv1.VMInfo, tc tandemv1.PeerClient) (string, error) {
	ms, err := m.metaLocal()
	if err != nil {
		return "", err
	}
	v, err := vmOf(ms, vm.Name)
	if err != nil {
		return "", err
	}
	blob, err := m.syncNVRAM(ctx, v, true)
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "VM %s: recording its NVRAM before the migration: %v", vm.Name, apierr.From(err))
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := tc.VMPutNVRAM(cctx, &tandemv1.PeerNVRAMRequest{Vm: vm, Gzip: blob.Gzip})
	if err != nil {
		return "", status.Errorf(status.Code(err), "target cannot take the NVRAM of %s: %s", vm.Name, grpcMessage(err))
	}
	return resp.Path, nil
}

// VMPutNVRAM writes a UEFI VM's variable store here before it migrates
// here; refused while the VM runs here.
func (m *Manager) VMPutNVRAM(ctx context.Context, req *tandemv1.PeerNVRAMRequest) (*tandemv1.PeerNVRAMResponse, error) {
	drv, done, err := m.busyDriver(ctx, req.Vm)
	if err != nil {
		return nil, err
	}
	defer done()
	if st, err := drv.State(ctx, req.Vm.Name); err == nil && (st == compute.StateRunning || st == compute.StatePaused) {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s runs on %s already", req.Vm.Name, m.self())
	}
	zr, err := gzip.NewReader(bytes.NewReader(req.Gzip))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "NVRAM of %s: %v", req.Vm.Name, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "NVRAM of %s: %v", req.Vm.Name, err)
	}
	p := m.nvramPath(req.Vm.Name)
	if err := writeFileAtomic(p, raw); err != nil {
		return nil, status.Errorf(codes.Internal, "node %s: %v", m.self(), fmt.Errorf("writing the NVRAM of %s: %w", req.Vm.Name, err))
	}
	m.forgetNVRAM(req.Vm.Name)
	return &tandemv1.PeerNVRAMResponse{Path: p}, nil
}
