// Package apinames spells the API's enum values the one way every Tandem
// command, benchmark and subsystem prints them to people.
//
// Owner: the API maintainers.
//
// Invariant: the package is pure and imports nothing of Tandem but
// proto/tandemv1; a name it returns never changes once released, since
// scripts and operators match on it. Values it does not know are reported
// as unknown (ok false), and each caller picks its own fallback.
package apinames
