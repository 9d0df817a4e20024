package consensus

import (
	"encoding/json"
	"fmt"
)

// SoftSettingsFile is the file dragonboat reads its soft settings from: in
// the process's working directory, once, when its package initialises.
// tandemd re-executes itself in a directory holding it (cmd/tandemd).
const SoftSettingsFile = "dragonboat-soft-settings.json"

// SoftSettings is the content of SoftSettingsFile tandemd runs with: its
// changes to dragonboat's soft settings. Each volume is a shard, and each
// shard replica allocates its queues up front: with the defaults that was
// about 0.9 MB per replica, 880 MB of a node's heap at 1000 volumes (issue
// 17), and every tick walked 16 pending-proposal maps per replica, a fifth
// of the idle CPU. A volume shard sees a few
// proposals at a time and the metadata shard a few dozen; a full queue makes
// dragonboat answer ErrSystemBusy, which Host.Propose and the reads retry,
// and a dropped message is resent by Raft.
//
// NodeReloadMillisecond is how often dragonboat's step and apply workers
// walk every shard of their host, besides the ticks and the work they are
// signalled for: at the default 200 ms that was five walks of each of the
// 1000 shards a second, more than the volume host's ticks (4 a second).
// The walk is a safety net: new shards are loaded on their own signal,
// and every tick steps every shard anyway.
func SoftSettings() []byte {
	soft := map[string]uint64{
		"ReceiveQueueLength":           128,  // default 1024 messages per replica
		"IncomingProposalQueueLength":  256,  // default 2048
		"IncomingReadIndexQueueLength": 256,  // default 4096
		"PendingProposalShards":        1,    // default 16
		"NodeReloadMillisecond":        1000, // default 200
	}
	b, err := json.MarshalIndent(soft, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("soft settings: %v", err))
	}
	return b
}
