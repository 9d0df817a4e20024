package version

// Version is the build's version; see the package doc for who sets it.
var Version = Default

// Default is what a build without the link-time flag reports.
const Default = "dev"

// Package is the import path the linker's -X flag names.
const Package = "github.com/tandemhci/tandem/internal/version"

// String returns Version, or Default if the linker set it to "" (an empty
// -X value, such as a failed `git describe` in a Makefile, still links).
func String() string {
	if Version == "" {
		return Default
	}
	return Version
}
