package api

import (
	"github.com/tandemhci/tandem/internal/vmm"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// consoleService is the admin Console API (issue 18): a VM's serial port
// and VNC display as bidirectional streams, served by the VM manager
// (internal/vmm/console.go), which forwards them to the node running the
// VM. Operator role or above (roles.go).
type consoleService struct {
	tandemv1.UnimplementedConsoleServer
	a *Services
}

func (s *consoleService) Serial(st tandemv1.Console_SerialServer) error {
	return toStatus(s.a.cfg.VMs.OpenConsole(st.Context(), vmm.ConsoleSerial, st))
}

func (s *consoleService) VNC(st tandemv1.Console_VNCServer) error {
	return toStatus(s.a.cfg.VMs.OpenConsole(st.Context(), vmm.ConsoleVNC, st))
}

// The peer side: the consoles of the VMs this node runs.

func (s *peerService) VMSerial(st tandemv1.Peer_VMSerialServer) error {
	return toStatus(s.a.cfg.VMs.VMConsoleStream(st.Context(), vmm.ConsoleSerial, st))
}

func (s *peerService) VMVNC(st tandemv1.Peer_VMVNCServer) error {
	return toStatus(s.a.cfg.VMs.VMConsoleStream(st.Context(), vmm.ConsoleVNC, st))
}
