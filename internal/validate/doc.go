// Package validate holds the rules for what requests may name and size:
// node, cluster, volume and VM names, volume sizes, checksum requests and
// host paths of boot files. Every rule is here once; internal/api applies
// them to every admin and peer request before a service sees it, and the
// managers call the same functions for the requests they build themselves
// (a VM's disks), so no name reaches a path under the data directory
// unchecked.
//
// Owner: the API maintainers.
//
// Invariants:
//   - the standard library only (internal/layers): the rules are plain
//     functions returning errors that wrap ErrInvalid, mapped to
//     InvalidArgument by the caller;
//   - a name that passes is 1-63 characters of [a-z0-9_-] (node and
//     cluster names without '_'), starting with a letter or digit: it
//     holds no '/', no "..", no NUL or other control character, so it is
//     one path element that stays inside the directory it is joined to;
//   - an error names the rule it breaks ("... contains '/'", "... is 300
//     characters; at most 63") and shows the value quoted and cut to a
//     readable length, never raw control characters;
//   - a size that passes is positive, a multiple of SectorSize and at most
//     MaxVolumeSize; a checksum request that passes allocates at most
//     MaxChecksumLength/MinChecksumBlock sums.
package validate
