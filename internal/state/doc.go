// Package state is the narrow state the daemon's subsystems share: this
// node's identity and configuration, the logger, the metadata client, the
// peer-client factory, the clock and the quorum check.
//
// Owner: the daemon maintainers. internal/daemon builds the one State of a
// running node and hands it to each subsystem (internal/membership first).
//
// Invariants:
//   - it holds shared handles only, never policy: no decision is made here,
//     and a field is added only when a subsystem needs it;
//   - subsystems receive *State, or the narrower interfaces and functions
//     they need, never *daemon.Daemon, so none of them can reach the
//     others' internals;
//   - handles that change while the node runs (the metadata client is
//     replaced on create, join and the expected-votes override) are read
//     through functions, each call returning the current one.
package state
