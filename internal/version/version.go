package version

import "strconv"

// Version is the build's version; see the package doc for who sets it.
var Version = Default

// Default is what a build without the link-time flag reports.
const Default = "dev"

// Package is the import path the linker's -X flag names.
const Package = "github.com/tandemhci/tandem/internal/version"

// Protocol is the highest protocol level (cluster version) this build
// supports, in decimal. Like Version it is set only by the linker (-X
// ...version.Protocol=N) and never assigned at run time: a release raises
// DefaultProtocol in the source, and a test links a "newer" build of the
// same source with a higher level to exercise a rolling upgrade
// (testcluster.BuildOptions). It must be a string because -X sets strings
// only, and initialised with a string literal: the linker's -X does not
// apply to a variable initialised by a function call (TestProtocolLevel
// checks the literal matches DefaultProtocol).
var Protocol = "1"

// DefaultProtocol is the protocol level of this release: the Raft commands
// and replication wire it speaks, as listed in consensus.Features. Level 1
// is the first release with versions.
const DefaultProtocol = 1

// String returns Version, or Default if the linker set it to "" (an empty
// -X value, such as a failed `git describe` in a Makefile, still links).
func String() string {
	if Version == "" {
		return Default
	}
	return Version
}

// ProtocolLevel is Protocol as a number, DefaultProtocol when the linker
// set something that is not a positive decimal.
func ProtocolLevel() uint32 {
	n, err := strconv.ParseUint(Protocol, 10, 32)
	if err != nil || n == 0 {
		return DefaultProtocol
	}
	return uint32(n)
}
