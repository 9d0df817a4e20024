package vmm

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// isStatus reports whether err is a status error of code whose text
// contains msg: what the tests of refusals check.
func isStatus(err error, code codes.Code, msg string) bool {
	return err != nil && status.Code(err) == code && strings.Contains(err.Error(), msg)
}

// testVolume is a volume of startedVM and the node of its primary.
type testVolume struct{ name, primary string }

// startedVM records VM name as started on node with 512 MiB and vols as
// its disks, each with UpToDate replicas on replicas.
func (w *world) startedVM(name, node string, replicas []string, vols ...testVolume) {
	var names []string
	for _, v := range vols {
		w.ms.Volumes[v.name] = &consensus.VolumeEntry{Name: v.name}
		info := &tandemv1.VolumeInfo{Name: v.name, Primary: v.primary}
		for _, r := range replicas {
			info.Replicas = append(info.Replicas, &tandemv1.VolumeReplica{Node: r, State: tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE})
		}
		w.vols.show[v.name] = info
		names = append(names, v.name)
	}
	w.ms.VMs[name] = &consensus.VMRecord{Name: name, Node: node, Desired: consensus.VMStarted,
		Spec: consensus.VMSpecRecord{MemoryMiB: 512, Volumes: names}}
}
