package cluster

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

var configKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

const maxConfigValue = 4096

// errNotInCluster is the answer of calls that need a cluster.
var errNotInCluster = status.Error(codes.FailedPrecondition, "this node is not in a cluster")

// GetConfig is the stored configuration (a linearizable read); with
// defaults, every known setting with the value in force.
func (m *Manager) GetConfig(ctx context.Context, defaults bool) (*tandemv1.ClusterConfig, error) {
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	rctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	ms, err := meta.State(rctx)
	if err != nil {
		return nil, apierr.From(err)
	}
	out := &tandemv1.ClusterConfig{Values: ms.Config}
	if defaults {
		out.Settings = settingsProto(ms.Config)
	}
	return out, nil
}

// settingsProto lists every known setting with the value in force. A
// stored value that does not parse shows as the default, not set.
func settingsProto(cfg map[string]string) []*tandemv1.ConfigSetting {
	var out []*tandemv1.ConfigSetting
	for _, e := range settings.Resolve(cfg) {
		out = append(out, &tandemv1.ConfigSetting{Key: e.Key, Value: e.Value, DefaultValue: e.Default, Set: e.Set, Unit: string(e.Kind), Description: e.Description})
	}
	return out
}

// SetConfig checks every key and value against the settings registry and
// stores values in canonical form ("100M" becomes "100MiB/s"). An empty
// value deletes a key, known or not, so a bad value stored by an older
// version can always be removed.
func (m *Manager) SetConfig(ctx context.Context, values map[string]string) (*tandemv1.ClusterConfig, error) {
	canon, err := canonical(values)
	if err != nil {
		return nil, err
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	if cur, err := meta.LocalState(); err == nil {
		if err := coherent(cur.Config, canon); err != nil {
			return nil, err
		}
	}
	if m.check != nil {
		for _, k := range slices.Sorted(maps.Keys(canon)) {
			if canon[k] == "" {
				continue // back to the default
			}
			if err := m.check(ctx, k, canon[k]); err != nil {
				return nil, err
			}
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := meta.SetConfigResult(pctx, canon)
	if err != nil {
		return nil, apierr.From(err)
	}
	return &tandemv1.ClusterConfig{Values: cfg}, nil
}

// canonical checks a change key by key and returns it in canonical form,
// naming every bad value at once.
func canonical(values map[string]string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no settings given")
	}
	canon := make(map[string]string, len(values))
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		if !configKeyRE.MatchString(k) {
			return nil, status.Errorf(codes.InvalidArgument, "setting name %q: use 1-64 lowercase letters, digits, '.', '_' or '-'", k)
		}
		if len(v) > maxConfigValue {
			return nil, status.Errorf(codes.InvalidArgument, "setting %s: value is %d bytes, the limit is %d", k, len(v), maxConfigValue)
		}
		if v == "" {
			canon[k] = ""
			continue
		}
		c, err := settings.Canonical(k, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		canon[k] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return canon, nil
}

// coherent checks the stored configuration with the change applied: HA
// timing must stay coherent as a whole (see package ha). Stored values
// that no longer parse read as their defaults, so they count as absent
// here rather than blocking every change.
func coherent(stored, change map[string]string) error {
	merged := map[string]string{}
	for k, v := range stored {
		if _, err := settings.Canonical(k, v); err == nil {
			merged[k] = v
		}
	}
	for k, v := range change {
		if v == "" {
			delete(merged, k)
		} else {
			merged[k] = v
		}
	}
	if err := settings.Validate(merged); err != nil {
		return status.Errorf(codes.Internal, "merged settings: %v", err) // cannot happen: both halves were checked
	}
	if _, err := ha.TimingFrom(merged); err != nil {
		return status.Errorf(codes.InvalidArgument, "HA timing: %v", err)
	}
	return nil
}
