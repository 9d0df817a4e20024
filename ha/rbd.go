package ha

// KeyRBDBlocklistIsFence is "true" when a blocklist confirmed by Ceph's
// monitors counts as fencing a dead node for VMs whose disks are all on
// RBD (issue 15): their only shared state is the images, and a
// blocklisted client's requests are refused by every OSD. The VM may
// still run and answer on its IP until the node is powered off.
const KeyRBDBlocklistIsFence = "ha.rbd_blocklist_is_fence"

// RBDBlocklistIsFence reads KeyRBDBlocklistIsFence (off unless "true").
func RBDBlocklistIsFence(cfg map[string]string) bool { return cfg[KeyRBDBlocklistIsFence] == "true" }
