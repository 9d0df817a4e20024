package validate

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error of this package.
var ErrInvalid = errors.New("invalid argument")

// Limits.
const (
	// MaxNameLen is the longest name: a DNS label's length.
	MaxNameLen = 63
	// SectorSize is the granularity of a volume's size.
	SectorSize = 4096
	// MaxVolumeSize is the largest volume: 64 TiB.
	MaxVolumeSize = 64 << 40
	// MinChecksumBlock and MaxChecksumBlock bound the block a checksum
	// request sums (a power of two); MaxChecksumLength bounds the range
	// of one request. Together they bound the answer to 16384 sums.
	MinChecksumBlock  = 4 << 10
	MaxChecksumBlock  = 64 << 20
	MaxChecksumLength = 64 << 20
	// MaxPathLen is the longest host path accepted (PATH_MAX).
	MaxPathLen = 4096
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Message is err's text without the ErrInvalid prefix, for an API answer.
func Message(err error) string {
	return strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
}

// Show quotes s for a message, cut to 40 characters.
func Show(s string) string {
	if utf8.RuneCountInString(s) > 40 {
		r := []rune(s)
		return fmt.Sprintf("%q…", string(r[:40]))
	}
	return fmt.Sprintf("%q", s)
}

// name checks s against the name rule of kind; underscore says whether
// '_' is allowed.
func name(kind, s string, underscore bool) error {
	extra := "-"
	if underscore {
		extra = "-_"
	}
	return nameWith(kind, s, extra)
}

// nameWith checks s against the name rule of kind: lowercase letters and
// digits, and after the first character the runes in extra.
func nameWith(kind, s, extra string) error {
	allowed := "lowercase letters, digits and '-'"
	switch extra {
	case "-_":
		allowed = "lowercase letters, digits, '-' or '_'"
	case "-_.":
		allowed = "lowercase letters, digits, '-', '_' or '.'"
	}
	rule := fmt.Sprintf("use 1-%d %s, starting with a letter or digit", MaxNameLen, allowed)
	switch {
	case s == "":
		return invalid("%s name is empty: %s", kind, rule)
	case len(s) > MaxNameLen:
		return invalid("%s name %s is %d characters; at most %d (%s)", kind, Show(s), len(s), MaxNameLen, rule)
	case strings.ContainsRune(s, 0):
		return invalid("%s name %s contains a NUL byte: %s", kind, Show(s), rule)
	case strings.ContainsFunc(s, unicode.IsControl):
		return invalid("%s name %s contains a control character: %s", kind, Show(s), rule)
	case strings.Contains(s, "/"):
		return invalid("%s name %s contains '/': %s", kind, Show(s), rule)
	case strings.Contains(s, ".."):
		return invalid("%s name %s contains '..': %s", kind, Show(s), rule)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && strings.ContainsRune(extra, r))
		if !ok {
			if i == 0 && strings.ContainsRune(extra, r) {
				return invalid("%s name %s starts with %q: %s", kind, Show(s), r, rule)
			}
			return invalid("%s name %s: %s", kind, Show(s), rule)
		}
	}
	return nil
}

// NodeName checks a node's name: 1-63 of [a-z0-9-], starting with a
// letter or digit.
func NodeName(s string) error { return name("node", s, false) }

// ClusterName checks a cluster's name, by the node name rule.
func ClusterName(s string) error { return name("cluster", s, false) }

// VolumeName checks a volume's name: 1-63 of [a-z0-9_-], starting with a
// letter or digit.
func VolumeName(s string) error { return name("volume", s, true) }

// VMName checks a VM's name, by the volume name rule (a VM's new disks are
// named after it).
func VMName(s string) error { return name("VM", s, true) }

// StorageName checks an external storage's name (tandem storage add), by
// the volume name rule.
func StorageName(s string) error { return name("storage", s, true) }

// ExportCertName checks an export certificate's name (its consumer), by
// the volume name rule.
func ExportCertName(s string) error { return name("export certificate", s, true) }

// ImageName checks an ISO image's name, by the volume name rule (it
// names a file in the data directory, so '/' and '..' never pass).
func ImageName(s string) error { return name("image", s, true) }

// MaxImageSize bounds an ISO image: a large distribution's DVD is under
// 16 GiB.
const MaxImageSize = 64 << 30

// ImageSize checks an ISO image's announced size in bytes.
func ImageSize(n int64) error {
	if n <= 0 || n > MaxImageSize {
		return invalid("image size %d bytes: an image has 1 byte to %d GiB", n, MaxImageSize>>30)
	}
	return nil
}

// CredentialName checks an API credential's name: 1-63 of [a-z0-9._-],
// starting with a letter or digit ('..' is refused like everywhere).
func CredentialName(s string) error { return nameWith("credential", s, "-_.") }

// VolumeHA checks a volume's HA policy: auto, manual, or empty (auto).
func VolumeHA(s string) error {
	switch s {
	case "", "auto", "manual":
		return nil
	}
	if len(s) > 16 {
		s = s[:16] + "..."
	}
	return invalid("volume HA policy %q: must be auto or manual", s)
}

// VolumeSize checks a volume's size in bytes.
func VolumeSize(n int64) error {
	switch {
	case n <= 0 || n%SectorSize != 0:
		return invalid("size %s (%d bytes): must be a positive multiple of 4 KiB", formatBytes(n), n)
	case n > MaxVolumeSize:
		return invalid("size %s is over the %s limit", formatBytes(n), formatBytes(MaxVolumeSize))
	}
	return nil
}

// formatBytes is internal/units.FormatBytes ("1.5 GiB"), which this
// package cannot import (standard library only).
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n > -1024 && n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[i:i+1] + "iB"
}

// Checksum checks a checksum request's range and block: offset not
// negative, length 1 byte to 64 MiB, block a power of two from 4 KiB to
// 64 MiB. The range's end is the replica's to check.
func Checksum(offset, length, block int64) error {
	for _, err := range []error{ChecksumOffset(offset), ChecksumLength(length), ChecksumBlock(block)} {
		if err != nil {
			return err
		}
	}
	return nil
}

// ChecksumOffset checks where a checksum range starts.
func ChecksumOffset(offset int64) error {
	if offset < 0 {
		return invalid("checksum offset %d: must not be negative", offset)
	}
	return nil
}

// ChecksumLength checks a checksum range's length.
func ChecksumLength(length int64) error {
	if length <= 0 || length > MaxChecksumLength {
		return invalid("checksum length %d bytes: must be 1 byte to 64 MiB", length)
	}
	return nil
}

// ChecksumBlock checks the block size of a checksum request.
func ChecksumBlock(block int64) error {
	if block < MinChecksumBlock || block > MaxChecksumBlock || block&(block-1) != 0 {
		return invalid("checksum block %d bytes: must be a power of two from 4 KiB to 64 MiB", block)
	}
	return nil
}

// HostPath checks the syntax of a path on a node's file system given in a
// request (a VM's --kernel or --initrd): absolute, clean, no NUL or other
// control character. Whether it is a regular file is for the node that
// opens it to check (RegularFile).
func HostPath(what, p string) error {
	switch {
	case len(p) > MaxPathLen:
		return invalid("%s path %s is %d bytes; at most %d", what, Show(p), len(p), MaxPathLen)
	case strings.ContainsFunc(p, unicode.IsControl):
		return invalid("%s path %s contains a control character", what, Show(p))
	case !filepath.IsAbs(p):
		return invalid("%s path %s must be absolute (a path on the node, such as /var/lib/images/vmlinuz)", what, Show(p))
	case filepath.Clean(p) != p:
		return invalid("%s path %s must be clean (no '..', '//' or trailing '/'; %s)", what, Show(p), Show(filepath.Clean(p)))
	}
	return nil
}
