package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// isoChecker checks the ISO 9660 signature as the bytes go by.
type isoChecker struct {
	head []byte
}

func (c *isoChecker) add(b []byte) {
	if want := isoMagicOffset + len(isoMagic); len(c.head) < want {
		c.head = append(c.head, b[:min(len(b), want-len(c.head))]...)
	}
}

// ok reports whether the signature is there (false until enough bytes
// arrived).
func (c *isoChecker) ok() bool {
	end := isoMagicOffset + len(isoMagic)
	return len(c.head) >= end && string(c.head[isoMagicOffset:end]) == isoMagic
}

func (c *isoChecker) complete() bool { return len(c.head) >= isoMagicOffset+len(isoMagic) }

// IsISO9660 reports whether the file at path starts like an ISO 9660
// image (the CLI checks before it sends a byte).
func IsISO9660(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, len(isoMagic))
	if _, err := f.ReadAt(b, isoMagicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return string(b) == isoMagic, nil
}

func notISO(name string) error {
	return status.Errorf(codes.InvalidArgument, "image %s is not an ISO 9660 image: no %q signature at byte %d (0x%x); only ISO images are stored, nothing was kept", name, isoMagic, isoMagicOffset, isoMagicOffset)
}

// Upload stores the image recv delivers (the Image API's client stream):
// the first message names it and gives its size, the last carries the
// client's SHA-256. It answers once the image is recorded and every other
// data member that answers holds a verified copy; those that do not
// fetch it at their next sweep (the answer's warning names them).
func (m *Manager) Upload(ctx context.Context, recv func() (*tandemv1.UploadImageRequest, error)) (*tandemv1.ImageInfo, error) {
	first, err := recv()
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "upload: no first message: %v", err)
	}
	name, size := first.Name, first.SizeBytes
	if err := validate.ImageName(name); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if size <= 0 || size > MaxSize {
		return nil, status.Errorf(codes.InvalidArgument, "image %s: size %d bytes; an image has 1 byte to %d GiB", name, size, MaxSize>>30)
	}
	if !m.st.Config.ComputeEnabled() {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s runs no VMs and keeps no images; upload through a data node", m.self())
	}
	ms, mc, err := m.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.Images[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "an image named %s exists; delete it first or choose another name (--name)", name)
	}
	start := time.Now()
	f, tmp, err := m.tempFile(name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node %s: %v", m.self(), err)
	}
	installed := false
	defer func() {
		if !installed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	var iso isoChecker
	var n int64
	sum := ""
	for msg := first; ; {
		if len(msg.Data) > 0 {
			n += int64(len(msg.Data))
			if n > size {
				return nil, status.Errorf(codes.InvalidArgument, "image %s: more than the announced %d bytes; nothing was kept", name, size)
			}
			iso.add(msg.Data)
			if iso.complete() && !iso.ok() {
				return nil, notISO(name)
			}
			h.Write(msg.Data)
			if _, err := f.Write(msg.Data); err != nil {
				return nil, status.Errorf(codes.ResourceExhausted, "node %s: writing image %s: %v", m.self(), name, err)
			}
		}
		if msg.Sha256 != "" {
			sum = strings.ToLower(msg.Sha256)
		}
		msg, err = recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, status.Errorf(status.Code(err), "upload of image %s broke off after %d of %d bytes: %s; nothing was kept", name, n, size, status.Convert(err).Message())
		}
	}
	if n != size {
		return nil, status.Errorf(codes.InvalidArgument, "upload of image %s ended after %d of the announced %d bytes; nothing was kept", name, n, size)
	}
	if !iso.ok() {
		return nil, notISO(name)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if sum == "" {
		return nil, status.Errorf(codes.InvalidArgument, "upload of image %s carried no SHA-256 to check it against; nothing was kept", name)
	}
	if sum != got {
		return nil, status.Errorf(codes.DataLoss, "image %s arrived with SHA-256 %s, the client sent %s; nothing was kept", name, got, sum)
	}
	rec := &consensus.ImageRecord{Name: name, Size: size, SHA256: got}
	unlock := m.lock(name)
	if _, err := m.install(f, tmp, rec); err != nil {
		unlock()
		return nil, status.Errorf(codes.Internal, "node %s: storing image %s: %v", m.self(), name, err)
	}
	installed = true
	if _, err := mc.CreateImage(ctx, name, size, got, m.self()); err != nil {
		m.forget(name)
		os.Remove(m.Path(name))
		unlock()
		return nil, apierr.From(err)
	}
	unlock()
	m.log.Info("image uploaded", "image", name, "bytes", size, "sha256", got, "took", time.Since(start).Round(time.Millisecond))
	warning := m.replicate(ctx, name)
	ms, err = mc.State(ctx)
	if err != nil {
		ms, err = apierr.LocalState(mc)
		if err != nil {
			return nil, err
		}
	}
	r, ok := ms.Images[name]
	if !ok {
		return nil, status.Errorf(codes.Aborted, "image %s was deleted while it was being copied", name)
	}
	info := InfoOf(ms, r)
	info.Warning = warning
	return info, nil
}

// replicate asks every other data member to fetch image name, in
// parallel; the answer names those that could not.
func (m *Manager) replicate(ctx context.Context, name string) string {
	mc, err := m.meta()
	if err != nil {
		return err.Error()
	}
	ms, err := mc.LocalState()
	if err != nil {
		return err.Error()
	}
	r := ms.Images[name]
	if r == nil {
		return ""
	}
	var nodes []string
	for nm, n := range ms.Nodes {
		if nm != m.self() && n.State == consensus.NodeMember && n.Role != "witness" && !slices.Contains(r.Nodes, nm) {
			nodes = append(nodes, nm)
		}
	}
	slices.Sort(nodes)
	timeout := 2*time.Minute + time.Duration(r.Size/(10<<20))*time.Second
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Go(func() {
			err := m.peers.Call(ctx, ms, node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
				_, err := c.ImageFetch(ctx, &tandemv1.PeerImageRequest{Image: name})
				return err
			})
			if err != nil {
				m.log.Warn("a member did not take a copy of a new image; it fetches it later", "image", name, "node", node, "err", err)
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s (%s)", node, status.Convert(err).Message()))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) == 0 {
		return ""
	}
	slices.Sort(failed)
	return "not yet copied to " + strings.Join(failed, ", ") + "; they fetch it when they can, and a VM start there fetches it first"
}
