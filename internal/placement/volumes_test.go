package placement

import (
	"slices"
	"testing"
)

func TestRankVolumeNodes(t *testing.T) {
	l := VolumeLoad{Replicas: map[string]int{"a": 3, "b": 1, "c": 1, "d": 0}}
	free := map[string]int64{"a": 900, "b": 100, "c": 500, "d": 10}
	cands := []string{"a", "b", "c", "d"}
	RankVolumeNodes(cands, l, free)
	// Fewest replicas first; free space, then the name, break ties.
	if want := []string{"d", "c", "b", "a"}; !slices.Equal(cands, want) {
		t.Fatalf("rank %v, want %v", cands, want)
	}
	free["b"] = 500
	RankVolumeNodes(cands, l, free)
	if want := []string{"d", "b", "c", "a"}; !slices.Equal(cands, want) {
		t.Fatalf("rank with a free-space tie %v, want %v", cands, want)
	}
}

func TestPrimaryFirst(t *testing.T) {
	l := VolumeLoad{Primaries: map[string]int{"a": 2, "b": 0, "c": 0}}
	in := []string{"a", "c", "b"}
	if got := PrimaryFirst(in, l); !slices.Equal(got, []string{"c", "a", "b"}) {
		t.Fatalf("PrimaryFirst = %v: the first of the fewest primaries leads, the rest keep their order", got)
	}
	if !slices.Equal(in, []string{"a", "c", "b"}) {
		t.Fatalf("the input changed: %v", in)
	}
	if got := PrimaryFirst([]string{"b", "a"}, l); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("PrimaryFirst = %v", got)
	}
}
