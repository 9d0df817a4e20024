package benchkit

import (
	"math"
	"slices"
	"time"
)

// MS is d in milliseconds, the unit of every report.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Sample is a sample sorted in ascending order with its extremes and mean.
type Sample struct {
	Sorted         []float64
	Min, Max, Mean float64
}

// SortSample sorts a copy of xs (the zero Sample when xs is empty).
func SortSample(xs []float64) Sample {
	if len(xs) == 0 {
		return Sample{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Sample{Sorted: s, Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// NearestRank is the q-quantile of an ascending sample by the nearest-rank
// method, an observed value: p99 of 1000 samples is the 990th smallest,
// p95 of 10 the largest. NaN for an empty sample.
func NearestRank(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Interpolated is the q-quantile of an ascending sample interpolating
// linearly between the closest ranks (numpy's default): with 20 samples
// p95 lies between the 19th and the 20th value. NaN for an empty sample.
func Interpolated(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}
