// Package version holds the version the Tandem binaries report.
//
// Owner: the daemon maintainers.
//
// Invariant: Version and Protocol (the highest cluster version this build
// supports, see consensus.Features) are set only by the linker (-ldflags "-X
// github.com/tandemhci/tandem/internal/version.Version=..."), from `git
// describe --always --dirty --tags` in the Makefile's build target and in
// internal/testcluster.BuildBinaries, and is never assigned at run time;
// without it (go build, go run, go test) Version stays "dev" and Protocol
// the release's DefaultProtocol. Protocol is overridden only to link a
// "newer" test build (testcluster.BuildOptions). A link-time -X
// variable is the one accepted exception to the rule of no package-level
// mutable state: -X can only set a package-level string variable.
package version
