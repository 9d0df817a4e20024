// Package consensus runs Tandem's Raft groups on dragonboat v4.
//
// Owner: the consensus maintainers.
//
// Each tandemd has one Host (a dragonboat NodeHost) that carries many shards:
//
//   - the metadata shard (MetaShardID): cluster identity, members and their
//     states, join-token verifiers, admin-token verifiers, configuration and
//     an audit trail. Its state machine is in memory, snapshotted as JSON, and
//     rebuilt from snapshot plus log on restart;
//   - one shard per replicated volume (epoch, primary, replica states), whose
//     members are the volume's replica nodes plus a witness when their number
//     is even. Callers start those with StartShard and their own state machine.
//
// The volume shards (sparse, sparse.go) run on a second NodeHost with a
// slower tick when HostConfig.VolumeRTTMillisecond asks for one: dragonboat
// ticks every shard of a host at its rate, so the tick sets what an idle
// volume costs. Both hosts share the Raft address through the TLS
// transport, which routes each received message to its shard's host
// (raftnet.Factory.OnSecond). Invariant: a shard runs on the host that
// holds its data (the metadata host when it has it, for shards started
// before the volume host existed), and every call about a shard goes to
// that host (nhOf).
//
// Quorum is a strict majority of voters, which Raft gives us. A caller learns
// about a missing quorum as ErrNoQuorum: proposals and linearizable reads are
// retried while the shard is electing (dragonboat's ErrShardNotReady) until
// the caller's deadline, and then reported as ErrNoQuorum rather than a
// timeout, so the API can refuse mutations with a clear reason. StaleRead and
// LocalMembership answer from the local replica without quorum for status.
//
// The volume shard commits replica states of type replication.ReplicaState,
// aliased here as ReplicaState with its constants and the refusals
// ErrStaleEpoch and ErrNotPrimary: consensus sits above the data path and
// imports it, never the reverse (internal/layers). The aliases keep the JSON
// of volume records, in the Raft log and snapshots, unchanged.
//
// The Host uses a deliberately small dragonboat configuration (tiny LogDB,
// 2 engine workers) because the appliance's memory belongs to VMs; see
// NewHost. CheckQuorum and PreVote are always on: a leader that loses its
// majority steps down, and a partitioned node cannot disrupt the others by
// bumping the term when it returns.
//
// Invariants:
//   - a proposal or linearizable read that cannot reach a quorum by the
//     caller's deadline fails with ErrNoQuorum; nothing is committed or read
//     linearizably on a minority. Only StaleRead and LocalMembership answer
//     without quorum, for status;
//   - CheckQuorum and PreVote are always on: a leader without a majority
//     steps down, and a partitioned node cannot disrupt the others when it
//     returns;
//   - API credentials are kept as verifiers only; a revoked credential
//     stays revoked and its name is never reused; removing a node revokes
//     the credentials it holds in the same entry; snapshots and log entries
//     of the older format (admin_token_verifiers) load as admin credentials;
//   - the cluster version (upgrade.go) only rises, and only in the entry
//     that leaves no member below it; a command of a feature above it is
//     refused alike by every replica, and a replica never skips or
//     misapplies a command above its own build's level: it stops;
//   - it imports replication (for ReplicaState) and is never imported by the
//     data path, and it knows no gRPC, libvirt, compute or daemon
//     (internal/layers).
package consensus
