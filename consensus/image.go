package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// ISO images (issue 18). The metadata shard holds each image's record:
// its size, its SHA-256 and the nodes that hold a verified copy. The
// bytes live on the nodes (internal/images), never in Raft.

// ImageRecord is an ISO image as the cluster knows it.
type ImageRecord struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 is the hex digest recorded at upload; every copy is checked
	// against it before a node lists itself in Nodes and before a VM
	// attaches it.
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Nodes hold a verified copy, the uploading node first.
	Nodes []string `json:"nodes"`
}

// ImageCmd is the body of the image commands.
type ImageCmd struct {
	Name   string `json:"name"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Node is the node that holds (image-create, image-copy) or dropped
	// (image-uncopy) a copy.
	Node string `json:"node,omitempty"`
}

// VMMediaCmd sets or clears (Image "") a VM's CD-ROM image.
type VMMediaCmd struct {
	VM    string `json:"vm"`
	Image string `json:"image,omitempty"`
}

// NVRAMBlob is a UEFI VM's variable store (OVMF_VARS, 528 KiB raw),
// gzip-compressed: a few KiB, as UEFI variables fill little of it.
type NVRAMBlob struct {
	Gzip []byte `json:"gzip"`
	// SHA256 is the hex digest of the raw store.
	SHA256 string `json:"sha256"`
}

// MaxNVRAMGzip bounds a recorded variable store.
const MaxNVRAMGzip = 1 << 20

// VMNVRAMCmd records a UEFI VM's variable store.
type VMNVRAMCmd struct {
	VM    string    `json:"vm"`
	NVRAM NVRAMBlob `json:"nvram"`
	// IfNode makes it conditional on the VM running there: only the node
	// that runs the VM records its store.
	IfNode string `json:"if_node,omitempty"`
}

// Image command ops.
const (
	opImageCreate = "image-create"
	opImageCopy   = "image-copy"
	opImageDelete = "image-delete"
	opVMMedia     = "vm-media"
	opVMNVRAM     = "vm-nvram"
)

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ImageUsers are the VMs whose CD-ROM holds image name, sorted.
func (s *MetaState) ImageUsers(name string) []string {
	var out []string
	for _, v := range s.VMs {
		if v.Spec.CDROM == name {
			out = append(out, v.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (m *metaSM) applyImage(c *Command) ([]byte, error) {
	s := m.s
	if s.Images == nil {
		s.Images = map[string]*ImageRecord{}
	}
	switch c.Op {
	case opImageCreate:
		ic := c.Image
		if ic == nil || ic.Name == "" || ic.Size <= 0 || !sha256RE.MatchString(ic.SHA256) || ic.Node == "" {
			return nil, fmt.Errorf("%w: image-create needs a name, a size, a SHA-256 and the node holding it", ErrBadCommand)
		}
		if old, ok := s.Images[ic.Name]; ok {
			if old.SHA256 == ic.SHA256 && old.Size == ic.Size && old.Created.Equal(c.At) {
				return json.Marshal(old) // a retried proposal
			}
			return nil, fmt.Errorf("%w: an image named %s exists", ErrBadCommand, ic.Name)
		}
		if n, ok := s.Nodes[ic.Node]; !ok || n.State != NodeMember {
			return nil, fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, ic.Node)
		}
		r := &ImageRecord{Name: ic.Name, Size: ic.Size, SHA256: ic.SHA256, Created: c.At, Nodes: []string{ic.Node}}
		s.Images[r.Name] = r
		m.audit(c, "image-create", fmt.Sprintf("image %s: %d bytes, sha256 %s, on %s", r.Name, r.Size, r.SHA256, ic.Node))
		return json.Marshal(r)
	case opImageCopy:
		ic := c.Image
		if ic == nil || ic.Name == "" || ic.Node == "" {
			return nil, fmt.Errorf("%w: image-copy needs an image and a node", ErrBadCommand)
		}
		r, ok := s.Images[ic.Name]
		if !ok {
			return nil, fmt.Errorf("%w: no image named %s", ErrBadCommand, ic.Name)
		}
		// The copy must be of this image, not of an earlier one of the
		// same name that was deleted meanwhile.
		if ic.SHA256 != r.SHA256 {
			return nil, fmt.Errorf("%w: image %s has sha256 %s, the copy %s", ErrBadCommand, ic.Name, r.SHA256, ic.SHA256)
		}
		if n, ok := s.Nodes[ic.Node]; !ok || n.State != NodeMember {
			return nil, fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, ic.Node)
		}
		if !slices.Contains(r.Nodes, ic.Node) {
			r.Nodes = append(r.Nodes, ic.Node)
		}
		return json.Marshal(r)
	case opImageDelete:
		ic := c.Image
		if ic == nil || ic.Name == "" {
			return nil, fmt.Errorf("%w: image-delete needs an image", ErrBadCommand)
		}
		if _, ok := s.Images[ic.Name]; !ok {
			return nil, fmt.Errorf("%w: no image named %s", ErrBadCommand, ic.Name)
		}
		if users := s.ImageUsers(ic.Name); len(users) > 0 {
			return nil, fmt.Errorf("%w: image %s is in the CD-ROM of VM %s; eject it first (tandem vm cdrom %s eject)", ErrBadCommand, ic.Name, users[0], users[0])
		}
		delete(s.Images, ic.Name)
		m.audit(c, "image-delete", "image "+ic.Name)
		return nil, nil
	case opVMMedia:
		mc := c.VMMedia
		if mc == nil || mc.VM == "" {
			return nil, fmt.Errorf("%w: vm-media needs a VM", ErrBadCommand)
		}
		v, ok := m.vmForUpdate(mc.VM)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, mc.VM)
		}
		if mc.Image != "" {
			if _, ok := s.Images[mc.Image]; !ok {
				return nil, fmt.Errorf("%w: no image named %s", ErrBadCommand, mc.Image)
			}
		}
		if !v.Spec.HasCDROM {
			return nil, fmt.Errorf("%w: VM %s has no CD-ROM drive", ErrBadCommand, v.Name)
		}
		if v.Spec.CDROM != mc.Image {
			before := v.Spec.CDROM
			v.Spec.CDROM = mc.Image
			m.audit(c, "vm-media", fmt.Sprintf("VM %s: CD-ROM %s -> %s", v.Name, orEmpty(before), orEmpty(mc.Image)))
		}
		return json.Marshal(v)
	case opVMNVRAM:
		nc := c.VMNVRAM
		if nc == nil || nc.VM == "" || len(nc.NVRAM.Gzip) == 0 || len(nc.NVRAM.Gzip) > MaxNVRAMGzip || !sha256RE.MatchString(nc.NVRAM.SHA256) {
			return nil, fmt.Errorf("%w: vm-nvram needs a VM and a store of at most %d bytes with its SHA-256", ErrBadCommand, MaxNVRAMGzip)
		}
		v, ok := m.vmForUpdate(nc.VM)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, nc.VM)
		}
		if v.Spec.Firmware != "uefi" {
			return nil, fmt.Errorf("%w: VM %s does not boot UEFI", ErrBadCommand, v.Name)
		}
		if nc.IfNode != "" && v.Node != nc.IfNode {
			return nil, fmt.Errorf("%w: VM %s is on %s, not %s", ErrBadCommand, v.Name, v.Node, nc.IfNode)
		}
		blob := nc.NVRAM
		v.NVRAM = &blob
		return json.Marshal(v)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

func orEmpty(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s
}

// CreateImage records an uploaded image held by node.
func (m *Meta) CreateImage(ctx context.Context, name string, size int64, sha256, node string) (*ImageRecord, error) {
	return proposeAs[ImageRecord](ctx, m, Command{Op: opImageCreate, Image: &ImageCmd{Name: name, Size: size, SHA256: sha256, Node: node}}, "image")
}

// AddImageCopy records that node holds a verified copy of the image
// whose digest is sha256.
func (m *Meta) AddImageCopy(ctx context.Context, name, sha256, node string) (*ImageRecord, error) {
	return proposeAs[ImageRecord](ctx, m, Command{Op: opImageCopy, Image: &ImageCmd{Name: name, SHA256: sha256, Node: node}}, "image")
}

// DeleteImage removes an image record; refused while a VM's CD-ROM holds it.
func (m *Meta) DeleteImage(ctx context.Context, name string) error {
	_, err := m.propose(ctx, Command{Op: opImageDelete, Image: &ImageCmd{Name: name}})
	return err
}

// SetVMMedia puts image into the VM's CD-ROM drive ("" ejects).
func (m *Meta) SetVMMedia(ctx context.Context, vm, image string) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMMedia, VMMedia: &VMMediaCmd{VM: vm, Image: image}}, "VM")
}

// SetVMNVRAM records a UEFI VM's variable store, if the VM is on node.
func (m *Meta) SetVMNVRAM(ctx context.Context, vm, node string, blob NVRAMBlob) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMNVRAM, VMNVRAM: &VMNVRAMCmd{VM: vm, NVRAM: blob, IfNode: node}}, "VM")
}
