package recovery

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/internal/sealed"
)

// The fence password fields, as the associated data of their sealed form:
// a blob sealed for one node's IPMI password does not open as another
// node's, or as the same node's Redfish password.
const (
	fieldIPMIPassword    = "ipmi.password"
	fieldRedfishPassword = "redfish.password"
)

// fenceBox is the sealing box of fence passwords, from the cluster secret
// in this node's data directory.
func (m *Manager) fenceBox() (*sealed.Box, error) {
	return sealed.NewFrom(m.secret, sealed.PurposeFencePassword)
}

// sealFence replaces the plain passwords of cfg, a new config for node,
// with their sealed form, so only that form is ever proposed.
func (m *Manager) sealFence(node string, cfg *consensus.FenceConfig) error {
	if cfg.IPMI == nil && cfg.Redfish == nil {
		return nil
	}
	box, err := m.fenceBox()
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "cannot seal the BMC password on this node: %v", err)
	}
	seal := func(plain *string, sealedPW *string, field string) error {
		s, err := box.Seal([]byte(*plain), node, field)
		if err != nil {
			return status.Errorf(codes.Internal, "seal %s: %v", field, err)
		}
		*sealedPW, *plain = s, ""
		return nil
	}
	if i := cfg.IPMI; i != nil {
		if err := seal(&i.Password, &i.PasswordSealed, fieldIPMIPassword); err != nil {
			return err
		}
	}
	if r := cfg.Redfish; r != nil {
		if err := seal(&r.Password, &r.PasswordSealed, fieldRedfishPassword); err != nil {
			return err
		}
	}
	return nil
}

// openPassword is the password of one agent of node, opened in memory
// for the fence about to run: the sealed form, or the plain text of a
// record written before sealing existed (logged once per node and field:
// re-run fence-config to seal it).
func (m *Manager) openPassword(node, field, sealedPW, plain string) (string, error) {
	if sealedPW == "" {
		if plain == "" {
			return "", fmt.Errorf("%s of node %s is not set; run 'tandem node fence-config %s' again", field, node, node)
		}
		if _, warned := m.plainWarned.LoadOrStore(node+"/"+field, true); !warned {
			m.log.Warn("a BMC password is stored in plain text in the metadata shard (written before sealing); re-run 'tandem node fence-config' for the node to seal it", "node", node, "field", field)
		}
		return plain, nil
	}
	box, err := m.fenceBox()
	if err != nil {
		return "", fmt.Errorf("cannot open the sealed %s of node %s: %w", field, node, err)
	}
	pw, err := box.Open(sealedPW, node, field)
	if err != nil {
		return "", fmt.Errorf("cannot open the sealed %s of node %s: %w", field, node, err)
	}
	return string(pw), nil
}

// unusableAgent stands for an agent whose password could not be opened:
// it never confirms, and says why, so the failure shows in the fence
// events and the VM's HA state instead of the agent silently missing.
type unusableAgent struct {
	name string
	err  error
}

func (a unusableAgent) Name() string { return a.name }

func (a unusableAgent) Fence(context.Context) (fencing.Result, error) {
	return fencing.Result{Agent: a.name, Detail: a.err.Error()}, fmt.Errorf("%w: %w", fencing.ErrNotConfirmed, a.err)
}

func (a unusableAgent) Status(context.Context) (fencing.PowerState, error) {
	return fencing.PowerUnknown, a.err
}

func (a unusableAgent) Unfence(context.Context) error { return a.err }
