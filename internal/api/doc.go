// Package api is the gRPC layer in front of the subsystems: it guards the
// admin and peer servers (Auth) and maps their domain errors to status
// codes through internal/apierr, so one failure has one code and one
// wording whichever subsystem reports it.
//
// Owner: the API maintainers. internal/daemon builds the servers, installs
// Auth's interceptors on them and registers the services.
//
// Invariants:
//   - every admin call over TCP presents a client certificate of the
//     cluster's CA and a valid admin token; over the root-only unix socket
//     the token suffices, and a node outside any cluster accepts only
//     create, join and status there;
//   - every backend call presents a node certificate of a node that was not
//     removed (Join excepted: the joiner proves itself with its token);
//   - only a node certificate may replicate (ReplicationPeer);
//   - it decides nothing about volumes, VMs or membership: it authenticates,
//     translates and delegates.
package api
