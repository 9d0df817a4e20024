// Package api is the gRPC layer in front of the subsystems: it guards the
// admin and peer servers (Auth) and holds every gRPC service adapter
// (Services: Cluster, Node, Volume, VM, HA and Credential on the admin servers, Peer on
// the backend server), each a thin translation onto internal/membership,
// internal/cluster, internal/volume, internal/vmm or internal/recovery.
//
// Owner: the API maintainers. internal/daemon builds the servers, installs
// Auth's interceptors on them, fills Config (the managers, and in Node the
// little only the daemon can do: the expected-votes override, the
// credentials directory, its replica ID) and calls
// RegisterAdmin and RegisterPeer.
//
// Invariants:
//   - every admin call over TCP presents a client certificate of the
//     cluster's CA that is not a removed node's (its node certificate or
//     its admin@NODE certificate) and a named API credential that is not
//     revoked; a certificate alone names no one. Over the unix socket,
//     which accepts only root or the daemon's user (LocalOnly), a call
//     without a token is the node's local admin (local@NODE) and a token is
//     checked as over TCP; a node outside any cluster accepts only create,
//     join and status there;
//   - every admin RPC has the least role it needs in one table
//     (requiredRole: readonly < operator < admin; missing means admin), a
//     credential below it is refused with PermissionDenied naming both
//     roles, and TestRoleTableComplete fails for an admin RPC missing from
//     the table;
//   - the interceptors put the caller's credential name in the context
//     (consensus.WithActor), so every audit entry a call causes names it;
//   - every backend call presents a node certificate of a node that was not
//     removed (Join excepted: the joiner proves itself with its token);
//   - only a node certificate may replicate (ReplicationPeer);
//   - every admin and peer request is checked against internal/validate
//     (names, sizes, checksum bounds, host paths) after authentication and
//     before its service method, by registering the services through
//     registerChecked (validate.go); a refusal is InvalidArgument and
//     reaches no subsystem;
//   - refused calls and joins are logged in aggregate (internal/refusal),
//     at most one summary line a minute, since anyone who reaches a port
//     can cause them;
//   - every error a service returns goes through one mapping (toStatus:
//     status errors unchanged, context errors with gRPC's own codes, any
//     other error through internal/apierr.From), so one domain error has
//     one code and one wording whichever service answers;
//   - the peer side of volumes answers FailedPrecondition "volumes are not
//     running on this node" while the node is in no cluster;
//   - it decides nothing about volumes, VMs or membership: it authenticates,
//     translates and delegates. It never imports internal/daemon
//     (internal/layers).
package api
