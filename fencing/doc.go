// Package fencing powers off (fences) a node that the cluster has given up
// on, so that its VMs can be restarted elsewhere without two copies ever
// running (docs/design.md §4 I3, §5).
//
// Owner: the HA maintainers.
//
// # Model
//
// Every fencing method is an agent behind the small [Fencer] interface:
// an IPMI BMC ([NewIPMI]), a Redfish BMC ([NewRedfish]) or the node's own
// self-fence lease ([NewLease]).
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
// # Redfish
//
// The Redfish agent follows the links the service publishes instead of
// hard-coding URIs: service root → Systems collection → the configured
// (or first) ComputerSystem → its Actions["#ComputerSystem.Reset"].target.
// Fence POSTs ResetType "ForceOff" there and confirms only when a later
// GET reports PowerState "Off" ("PoweringOff" is not off). References that
// point to another host are refused, so credentials (HTTP Basic, over TLS
// only) never leave for anywhere but the BMC. Session (X-Auth-Token)
// authentication is not implemented: DSP0266 requires services to accept
// Basic auth, and short-lived sessions would have to be deleted on every
// failure path.
//
// Design note on testing: the IPMI agent is tested against a real BMC
// simulator (OpenIPMI's ipmi_sim). No Redfish BMC emulator is packaged for
// Debian (DMTF's emulator and sushy-tools live on PyPI, which the build
// machines cannot reach), so the Redfish agent is tested against a
// protocol-level httptest TLS server implementing the minimal DMTF
// resources (ServiceRoot, ComputerSystemCollection, ComputerSystem with
// PowerState and the Reset action, Redfish error bodies, Basic auth) and
// their failure modes. It checks our side of the protocol, not any
// vendor's quirks.
//
// # Secrets
//
// BMC passwords never appear in logs, errors or String()/GoString()/slog
// output: [IPMIConfig], [RedfishConfig] and their agents redact themselves,
// and errors coming back from the IPMI library or the HTTP client are
// scrubbed of the password before they leave this package.
//
// # Invariants
//
//   - Fence returns a nil error only with Result.Confirmed true, and only on
//     positive evidence (the BMC reports the power off after our power-down,
//     or the self-fence lease has provably expired, margin included); every
//     other outcome is an error;
//   - BMC passwords never leave the package in a log line, an error or a
//     printed value, and Redfish credentials go only to the configured BMC,
//     over TLS;
//   - it knows no Raft and no daemon (internal/layers).
package fencing
