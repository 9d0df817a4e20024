package api

import "github.com/tandemhci/tandem/consensus"

// requiredRole is the one table of the least role each admin RPC needs.
// A method missing here needs admin; TestRoleTableComplete fails for any
// admin RPC missing here, so a new RPC gets a deliberate entry.
//
//   - readonly: status, list, show, events, health, audit, upgrade status;
//   - operator: VM and volume lifecycle, migration, console, maintenance,
//     node notes, ISO images and CD-ROM changes, the consoles (serial
//     and VNC);
//   - admin: membership, join tokens, cluster configuration, expected
//     votes, fencing (configuration and fencing a node), arming HA,
//     credentials and export certificates (listing them is readonly).
func requiredRole(method string) string {
	role, ok := methodRole(method)
	if !ok {
		return consensus.RoleAdmin
	}
	return role
}

// methodRole returns the table's entry for a full method name.
func methodRole(method string) (string, bool) {
	switch method {
	case "/tandem.v1.Cluster/Status",
		"/tandem.v1.Cluster/GetConfig",
		"/tandem.v1.Cluster/Audit",
		"/tandem.v1.Cluster/UpgradeStatus",
		"/tandem.v1.Node/List",
		"/tandem.v1.Volume/List",
		"/tandem.v1.Volume/Show",
		"/tandem.v1.Volume/ListExportCerts",
		"/tandem.v1.VM/List",
		"/tandem.v1.VM/Show",
		"/tandem.v1.HA/Status",
		"/tandem.v1.HA/Events",
		"/tandem.v1.Storage/List",
		"/tandem.v1.Storage/Show",
		"/tandem.v1.Image/List":
		return consensus.RoleReadonly, true
	case "/tandem.v1.Volume/Create",
		"/tandem.v1.Volume/Delete",
		"/tandem.v1.Volume/Promote",
		"/tandem.v1.Volume/Set",
		"/tandem.v1.Volume/Resync",
		"/tandem.v1.Volume/Verify",
		"/tandem.v1.VM/Create",
		"/tandem.v1.VM/Start",
		"/tandem.v1.VM/Stop",
		"/tandem.v1.VM/Delete",
		"/tandem.v1.VM/Migrate",
		"/tandem.v1.VM/Console",
		"/tandem.v1.VM/ResizeDisk",
		"/tandem.v1.VM/Set",
		"/tandem.v1.VM/AddNIC",
		"/tandem.v1.VM/RemoveNIC",
		"/tandem.v1.VM/AddDisk",
		"/tandem.v1.VM/DetachDisk",
		"/tandem.v1.Node/Maintenance",
		"/tandem.v1.Node/SetNote",
		"/tandem.v1.Volume/Resize",
		"/tandem.v1.Image/Upload",
		"/tandem.v1.Image/Delete",
		"/tandem.v1.Image/ChangeMedia",
		// The consoles give the guest's keyboard: never readonly.
		"/tandem.v1.Console/Serial",
		"/tandem.v1.Console/VNC",
		"/tandem.v1.GuestAgent/FSFreeze",
		"/tandem.v1.GuestAgent/FSThaw":
		return consensus.RoleOperator, true
	case methodCreate,
		methodJoin,
		"/tandem.v1.Cluster/CreateToken",
		"/tandem.v1.Cluster/SetExpectedVotes",
		"/tandem.v1.Cluster/RotateCA",
		"/tandem.v1.Cluster/SetConfig",
		"/tandem.v1.Node/FenceConfig",
		"/tandem.v1.Node/Fence",
		"/tandem.v1.Node/Remove",
		"/tandem.v1.HA/Arm",
		"/tandem.v1.Credential/Create",
		"/tandem.v1.Credential/List",
		"/tandem.v1.Credential/Revoke",
		// Export certificates open volumes to hosts outside the cluster:
		// a security change, not volume lifecycle.
		"/tandem.v1.Volume/IssueExportCert",
		"/tandem.v1.Volume/RevokeExportCert",
		// Storage holds a credential of another system (the cephx key).
		"/tandem.v1.Storage/Add",
		"/tandem.v1.Storage/Remove":
		return consensus.RoleAdmin, true
	}
	return "", false
}
