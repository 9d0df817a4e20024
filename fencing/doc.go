// Package fencing powers off (fences) a node that the cluster has given up
// on, so that its VMs can be restarted elsewhere without two copies ever
// running (DESIGN.md §4 I3, §5).
//
// # Model
//
// Every fencing method is an agent behind the small [Fencer] interface:
// an IPMI BMC ([NewIPMI]) or the node's own self-fence lease ([NewLease]).
// [FenceAny] tries agents in order until one of them confirms.
//
// Fencing is "confirmed" only by positive evidence:
//   - the BMC reports the chassis power as off after we asked it to power
//     down, or
//   - the node's self-fence lease has provably expired, including a safety
//     margin for clock drift and the time the node needs to stop its VMs.
//
// Anything else is not fencing. A failed, timed-out, unreachable or
// misconfigured agent never counts as fenced: silence from a node or its
// BMC says nothing about whether the node still writes. The contract of
// Fence is therefore strict: it returns a nil error only together with
// Result.Confirmed == true, and every unconfirmed outcome is an error that
// matches [ErrNotConfirmed] or wraps the agent's failure.
//
// # Secrets
//
// BMC passwords never appear in logs, errors or String()/GoString()/slog
// output: [IPMIConfig] and the IPMI agent redact themselves, and errors
// coming back from the IPMI library are scrubbed of the password before
// they leave this package.
package fencing
