// Package invariant names the messages a daemon logs when it finds one of
// its own invariants broken but goes on running (it repairs or contains
// the damage rather than crash a node). Tests must not go on: the test
// harness fails a test whose daemons logged any of them.
//
// Invariant: the package is constants only and depends on the standard
// library alone, so that the lowest layers and the test harness can share
// the exact text without depending on each other.
//
// Owner: the test-infrastructure maintainers.
package invariant

// ReaderMutation is logged when a retired shared copy of the cluster
// metadata differs from what was published: a caller mutated what
// consensus.LocalState or State returned, which are read-only.
const ReaderMutation = "a reader mutated the shared metadata state (LocalState/State results are read-only)"

// Messages are all the messages above, for a harness to look for.
func Messages() []string { return []string{ReaderMutation} }
