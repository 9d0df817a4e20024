// Package settings is the registry of Tandem's cluster-wide settings (the
// keys of 'tandem cluster config set'): for each key its type, default,
// allowed range, description, and how to parse and print its values.
//
// Owner: the appliance maintainers.
//
// Invariant: a key the registry does not know is not a setting, and a value
// is only ever stored in canonical form after it parsed and fell in range
// (Canonical). Readers (Duration, Rate, Bool) never return a garbage value:
// an absent key reads as its default, and a stored value that no longer
// parses (written by an older version) reads as the default with an error
// the caller logs. The registry is built by a function and never mutated;
// the package does no I/O.
package settings
