package daemon

import (
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Maintenance is served by the VM manager (internal/vmm): the mode is
// committed first, then the node is evacuated or failed back.
func (s *nodeService) Maintenance(req *tandemv1.NodeMaintenanceRequest, stream tandemv1.Node_MaintenanceServer) error {
	return s.d.vms.Maintenance(stream.Context(), req, stream.Send)
}
