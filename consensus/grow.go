package consensus

import (
	"context"
	"encoding/json"
	"fmt"
)

// Growing a replicated volume: the catalog records the new size only once
// every in-sync replica has grown durably (internal/volume's Resize).

// Command ops of volume growth (kept at the end of the op lists).
const (
	opVolumeSize = "volume-size"
)

// VolumeSizeCmd records a replicated volume's larger size.
type VolumeSizeCmd struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

func (m *metaSM) applyVolumeSize(c *Command) ([]byte, error) {
	u := c.VolumeSize
	if u == nil || u.Name == "" {
		return nil, fmt.Errorf("%w: volume-size without volume", ErrBadCommand)
	}
	e, ok := m.volumeForUpdate(u.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, u.Name)
	}
	switch {
	case e.IsRBD():
		return nil, fmt.Errorf("%w: volume %s is an RBD volume (its size changes with volume-rbd)", ErrBadCommand, u.Name)
	case e.State != VolumeReady:
		return nil, fmt.Errorf("%w: volume %s is %s", ErrBadCommand, u.Name, e.State)
	case u.Size <= 0 || u.Size%4096 != 0:
		return nil, fmt.Errorf("%w: size %d is not a positive multiple of 4096", ErrBadCommand, u.Size)
	case u.Size < e.Size:
		return nil, fmt.Errorf("%w: volume %s is %d bytes; shrinking it to %d is not supported", ErrBadCommand, u.Name, e.Size, u.Size)
	}
	if u.Size > e.Size {
		old := e.Size
		e.Size = u.Size
		m.audit(c, "volume-resize", fmt.Sprintf("volume %s: %d -> %d bytes", e.Name, old, e.Size))
	}
	return json.Marshal(e)
}

// SetVolumeSize records a replicated volume's new, larger size (the same
// size again is a no-op) and returns the entry as committed.
func (m *Meta) SetVolumeSize(ctx context.Context, name string, size int64) (*VolumeEntry, error) {
	return proposeAs[VolumeEntry](ctx, m, Command{Op: opVolumeSize, VolumeSize: &VolumeSizeCmd{Name: name, Size: size}}, "volume")
}
