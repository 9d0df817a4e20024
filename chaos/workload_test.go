package chaos

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestShouldMove: a follower moves to a newer epoch or to another primary
// at its own epoch; never back to an older epoch's view (an isolated
// node's answer), never when nothing changed, never before it connected.
func TestShouldMove(t *testing.T) {
	for _, c := range []struct {
		name  string
		node  string
		epoch uint64
		seen  Sighting
		move  bool
	}{
		{"same primary, same epoch", "n1", 3, Sighting{"n1", 3}, false},
		{"promoted elsewhere", "n1", 3, Sighting{"n2", 4}, true},
		{"same node at a newer epoch", "n1", 3, Sighting{"n1", 5}, true},
		{"another primary at the same epoch: the label was stale", "n1", 3, Sighting{"n2", 3}, true},
		{"an isolated node's stale view", "n2", 4, Sighting{"n1", 3}, false},
		{"the same node at an older epoch", "n2", 4, Sighting{"n2", 3}, false},
		{"no primary named", "n1", 3, Sighting{"", 9}, false},
		{"never connected", "", 0, Sighting{"n1", 3}, false},
	} {
		if got := shouldMove(c.node, c.epoch, c.seen); got != c.move {
			t.Errorf("%s: shouldMove(%s, %d, %+v) = %v, want %v", c.name, c.node, c.epoch, c.seen, got, c.move)
		}
	}
	followers := 0
	for c := range 4 {
		if isFollower(c) {
			followers++
		}
	}
	if followers != 2 || isFollower(0) || !isFollower(1) {
		t.Fatalf("every second client of a volume follows: %d of 4", followers)
	}
}

// TestLookOrder: a follower asks every node once per round, in an order
// the seed fixes, so no node (an isolated one, say) is asked three times
// in a row.
func TestLookOrder(t *testing.T) {
	draw := func(seed uint64) []int {
		o := &lookOrder{rng: rand.New(rand.NewPCG(seed, 1)), n: 3}
		var out []int
		for range 300 {
			out = append(out, o.next())
		}
		return out
	}
	for seed := range uint64(50) {
		got := draw(seed)
		if !reflect.DeepEqual(got, draw(seed)) {
			t.Fatalf("seed %d: two orders", seed)
		}
		for r := 0; r < len(got); r += 3 {
			seen := map[int]bool{}
			for _, i := range got[r : r+3] {
				if i < 0 || i >= 3 || seen[i] {
					t.Fatalf("seed %d: round %v does not ask each node once", seed, got[r:r+3])
				}
				seen[i] = true
			}
		}
		for i := 2; i < len(got); i++ {
			if got[i] == got[i-1] && got[i] == got[i-2] {
				t.Fatalf("seed %d: node %d asked three times in a row", seed, got[i])
			}
		}
	}
}
