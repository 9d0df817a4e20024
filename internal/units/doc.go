// Package units reads and prints byte sizes and transfer rates the one way
// every Tandem command and setting spells them.
//
// Owner: the daemon maintainers.
//
// Invariant: every unit is 1024-based. A bare number is bytes (or bytes per
// second); K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024, case does
// not matter; "GB" and friends are refused as ambiguous. Whatever Format*
// prints, Parse* reads back to the same number (FormatBytes rounds for
// people; FormatRate is exact). The package is pure: no I/O, no state.
package units
