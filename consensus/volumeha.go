package consensus

import (
	"context"
	"encoding/json"
	"fmt"
)

// The HA policy of a volume (VolumeEntry.HA).
const (
	VolumeHAAuto   = "auto"
	VolumeHAManual = "manual"
)

// opVolumeHA changes a volume's HA policy (kept at the end of the op lists).
const opVolumeHA = "volume-ha"

// VolumeHACmd sets a volume's HA policy.
type VolumeHACmd struct {
	Name string `json:"name"`
	HA   string `json:"ha"`
}

// HAMode is the volume's HA policy, auto for entries that never set one.
func (e *VolumeEntry) HAMode() string {
	if e.HA == "" {
		return VolumeHAAuto
	}
	return e.HA
}

func checkVolumeHA(mode string) error {
	switch mode {
	case "", VolumeHAAuto, VolumeHAManual:
		return nil
	}
	return fmt.Errorf("%w: volume HA policy %q: must be auto or manual", ErrBadCommand, mode)
}

func (m *metaSM) applyVolumeHA(c *Command) ([]byte, error) {
	v := c.VolumeHA
	if v == nil || v.Name == "" {
		return nil, fmt.Errorf("%w: volume-ha needs a volume", ErrBadCommand)
	}
	if err := checkVolumeHA(v.HA); err != nil {
		return nil, err
	}
	e, ok := m.volumeForUpdate(v.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, v.Name)
	}
	mode := v.HA
	if mode == "" {
		mode = VolumeHAAuto
	}
	if e.HAMode() != mode {
		prev := e.HAMode()
		e.HA = mode
		m.audit(c, "volume-ha", fmt.Sprintf("volume %s: HA %s (was %s)", e.Name, mode, prev))
	}
	return json.Marshal(e)
}

// SetVolumeHA sets volume name's HA policy (auto or manual).
func (m *Meta) SetVolumeHA(ctx context.Context, name, mode string) (*VolumeEntry, error) {
	if err := checkVolumeHA(mode); err != nil {
		return nil, err
	}
	return proposeAs[VolumeEntry](ctx, m, Command{Op: opVolumeHA, VolumeHA: &VolumeHACmd{Name: name, HA: mode}}, "volume")
}
