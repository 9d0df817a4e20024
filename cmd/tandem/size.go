package main

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// parseSize reads a size in bytes: a plain number or one with a binary unit
// (K, M, G, T or KiB, MiB, GiB, TiB; case does not matter). A decimal
// fraction is fine as long as it comes out to whole bytes ("1.5G").
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return 0, errors.New("size is empty (e.g. 20G)")
	case strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("size %q is negative", s)
	}
	end := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if end >= 0 {
		num, unit = t[:end], strings.TrimSpace(t[end:])
	}
	whole, frac, dot := strings.Cut(num, ".")
	if whole == "" || (dot && frac == "") || strings.Contains(frac, ".") {
		return 0, fmt.Errorf("size %q is not a number followed by an optional unit (e.g. 512, 64K, 1.5GiB)", s)
	}
	shift, err := sizeUnitShift(unit)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	// Exact arithmetic: (whole.frac) * 2^shift must be a whole number.
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Lsh(n, shift)
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(n, den, new(big.Int))
	switch {
	case r.Sign() != 0:
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	case q.Sign() == 0:
		return 0, fmt.Errorf("size %q is zero", s)
	case !q.IsInt64():
		return 0, fmt.Errorf("size %q is too large (at most %d bytes)", s, int64(^uint64(0)>>1))
	}
	return q.Int64(), nil
}

// sizeUnitShift maps a unit to its power of two. "GB" and friends are
// refused: whether they mean 10^9 or 2^30 is exactly the doubt to avoid.
func sizeUnitShift(unit string) (uint, error) {
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

// formatBytes prints n with a binary unit and at most one decimal: "20 GiB",
// "1.5 MiB", "512 B".
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
	s := strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	return s + " " + units[i:i+1] + "iB"
}
