package testcluster

import (
	"errors"
	"fmt"
	"strings"
)

// strangerOffset is the host part of the switch's backend address.
const strangerOffset = 250

// SwitchOnBackend gives the switch namespace an address on the backend
// network (<subnet>.250) and returns it, so that processes run with
// ExecSwitch or StartOnSwitch reach the nodes' backend ports as a host
// on that network that is not a cluster member would. Calling it again
// is harmless.
func (c *Cluster) SwitchOnBackend() (string, error) {
	if len(c.Nodes) == 0 {
		return "", errors.New("testcluster: SwitchOnBackend: no nodes")
	}
	i := strings.LastIndex(c.Nodes[0].IP, ".")
	ip := fmt.Sprintf("%s.%d", c.Nodes[0].IP[:i], strangerOffset)
	if err := c.ipBatch(c.swNS, []string{fmt.Sprintf("addr replace %s/24 dev %s", ip, bridgeName)}); err != nil {
		return "", fmt.Errorf("testcluster: SwitchOnBackend: %w", err)
	}
	return ip, nil
}
