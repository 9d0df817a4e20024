package units

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// MinRate is the smallest rate ParseRate accepts other than 0 (unlimited):
// anything slower is almost certainly a unit mistake ("100" meant 100 MiB/s).
const MinRate = 64 << 10

// Examples shown in errors.
const (
	sizeExamples = "e.g. 512, 64K, 1.5GiB"
	rateExamples = "e.g. 100M or 100MiB/s; 0 for unlimited"
)

// ParseSize reads a size in bytes: a plain number or one with a binary unit
// (K, M, G, T or KiB, MiB, GiB, TiB; case does not matter). A decimal
// fraction is fine as long as it comes out to whole bytes ("1.5G"). Zero is
// refused.
func ParseSize(s string) (int64, error) {
	n, err := parseBytes(s, s, "size", sizeExamples)
	if err == nil && n == 0 {
		return 0, fmt.Errorf("size %q is zero", s)
	}
	return n, err
}

// ParseRate reads a transfer rate in bytes per second: a size as ParseSize
// reads it, optionally followed by "/s" ("100M", "100MiB/s", "104857600").
// 0 means unlimited; any other rate below MinRate is refused.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.HasSuffix(strings.ToLower(t), "/s") {
		t = strings.TrimSpace(t[:len(t)-2])
	}
	n, err := parseBytes(s, t, "rate", rateExamples)
	if err == nil && n != 0 && n < MinRate {
		return 0, fmt.Errorf("rate %q is %s/s, below the minimum of %s/s (0 means unlimited; did you forget a unit, e.g. 100M?)", s, FormatBytes(n), FormatBytes(MinRate))
	}
	return n, err
}

// parseBytes reads t, a size that may be zero; orig (what the user wrote),
// what ("size", "rate") and examples word the errors.
func parseBytes(orig, t, what, examples string) (int64, error) {
	t = strings.TrimSpace(t)
	switch {
	case t == "":
		return 0, fmt.Errorf("%s is empty (%s)", what, examples)
	case strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("%s %q is negative", what, orig)
	}
	end := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if end >= 0 {
		num, unit = t[:end], strings.TrimSpace(t[end:])
	}
	whole, frac, dot := strings.Cut(num, ".")
	if whole == "" || (dot && frac == "") || strings.Contains(frac, ".") {
		return 0, fmt.Errorf("%s %q is not a number followed by an optional unit (%s)", what, orig, examples)
	}
	shift, err := unitShift(unit)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", what, orig, err)
	}
	// Exact arithmetic: (whole.frac) * 2^shift must be a whole number.
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Lsh(n, shift)
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(n, den, new(big.Int))
	switch {
	case r.Sign() != 0:
		return 0, fmt.Errorf("%s %q is not a whole number of bytes", what, orig)
	case !q.IsInt64():
		return 0, fmt.Errorf("%s %q is too large (at most %d bytes)", what, orig, int64(^uint64(0)>>1))
	}
	return q.Int64(), nil
}

// unitShift maps a unit to its power of two. "GB" and friends are refused:
// whether they mean 10^9 or 2^30 is exactly the doubt to avoid.
func unitShift(unit string) (uint, error) {
	u := strings.ToUpper(unit)
	if u == "" || u == "B" {
		return 0, nil
	}
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}[u[0]]
	switch rest := u[1:]; {
	case shift == 0:
	case rest == "" || rest == "I" || rest == "IB":
		return shift, nil
	case rest == "B":
		return 0, fmt.Errorf("unit %q is ambiguous; use %c or %ciB (1024-based)", unit, u[0], u[0])
	}
	return 0, fmt.Errorf("unknown unit %q (use K, M, G, T or KiB, MiB, GiB, TiB; all 1024-based)", unit)
}

// FormatBytes prints n with a binary unit and at most one decimal: "20 GiB",
// "1.5 MiB", "512 B". It rounds; it is for people.
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n > -1024 && n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	return s + " " + units[i:i+1] + "iB"
}

// FormatRate prints a rate exactly, in the largest unit that divides it:
// "100MiB/s", "1536KiB/s", "100000B/s"; 0 prints as "0" (unlimited).
// ParseRate reads the result back to n.
func FormatRate(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name + "/s"
		}
	}
	return strconv.FormatInt(n, 10) + "B/s"
}
