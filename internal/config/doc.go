// Package config reads, defaults and validates tandemd's configuration file.
//
// Owner: the appliance maintainers.
//
// The file is a single YAML document of settings. Parsing is strict (an
// unknown or misspelt setting is an error, not silently ignored), missing
// settings get defaults, and every problem is reported at once, one line
// each, in terms of the setting's name in the file.
//
// Command-line flags override file values: Decode the file, set the fields
// the flags give, then ApplyDefaults and Validate, so that addresses derived
// from backend_addr follow a flag that changes it.
//
// Invariants: decoding is strict (an unknown or misspelt setting is an
// error); Validate reports every problem at once, in terms of the setting's
// name in the file; and tandemd starts only from a Config that went through
// ApplyDefaults and Validate after the flags were applied.
package config
