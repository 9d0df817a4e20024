// Package refusal keeps refused requests cheap and quiet: Limiter is a
// per-source token bucket for calls anyone on the network may make (a join
// needs no certificate), and Log turns a burst of refusals into one summary
// line per interval instead of one line per attempt. Metrics count each
// refusal; the log says that something is going on and who does it.
//
// Owner: the API maintainers. internal/membership limits and logs join
// attempts with it; internal/api logs refused admin calls with it.
//
// Invariants:
//   - the standard library only (internal/layers), and no package state:
//     each Limiter and Log is its owner's;
//   - memory is bounded whatever the callers send: a Limiter tracks at most
//     MaxSources addresses (the rest share one overflow bucket), and a Log
//     keeps at most maxKeys distinct sources per interval;
//   - time comes from the caller (Allow, Refused take now), so tests need
//     no sleeping; the one timer a Log starts only flushes what was counted.
package refusal
