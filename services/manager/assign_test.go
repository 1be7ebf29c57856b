package manager

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

func ids(n int) []contracts.NodeID {
	out := make([]contracts.NodeID, n)
	for i := range out {
		out[i] = contracts.NodeID(fmt.Sprintf("node-%d", i+1))
	}
	return out
}

// bruteMinMoves is the fewest moves of any balanced assignment, found by
// trying every choice of which nodes get ⌈P/n⌉.
func bruteMinMoves(owners, nodes []contracts.NodeID) int {
	p, n := len(owners), len(nodes)
	base, extra := p/n, p%n
	load := Load(owners)
	best := 0
	for mask := 0; mask < 1<<n; mask++ {
		if bits.OnesCount(uint(mask)) != extra {
			continue
		}
		stay := 0
		for i, id := range nodes {
			q := base
			if mask&(1<<i) != 0 {
				q++
			}
			stay += min(load[id], q)
		}
		best = max(best, stay)
	}
	return p - best
}

// checkBalanced fails unless every partition is owned by one of nodes and
// each node holds ⌊P/n⌋ or ⌈P/n⌉.
func checkBalanced(t *testing.T, owners, nodes []contracts.NodeID) {
	t.Helper()
	p, n := len(owners), len(nodes)
	load := Load(owners)
	for part, o := range owners {
		if !slices.Contains(nodes, o) {
			t.Fatalf("partition %d owned by %q, not one of %v", part, o, nodes)
		}
	}
	for _, id := range nodes {
		if c := load[id]; c != p/n && c != (p+n-1)/n {
			t.Fatalf("%s holds %d partitions, want %d or %d", id, c, p/n, (p+n-1)/n)
		}
	}
}

// grown returns a balanced table over nodes built by growing one node at a time.
func grown(p int, nodes []contracts.NodeID) []contracts.NodeID {
	owners := make([]contracts.NodeID, p)
	for i := range nodes {
		owners = Rebalance(owners, nodes[:i+1])
	}
	return owners
}

func TestRebalanceResizes(t *testing.T) {
	cases := []struct {
		name      string
		p         int
		from, to  int
		wantMoved int
	}{
		{"first node", 256, 0, 1, 256},
		{"1 to 2", 256, 1, 2, 128},
		{"4 to 5 moves P/5", 256, 4, 5, 51},
		{"5 to 4 moves the leaver's", 256, 5, 4, 51},
		{"7 to 8", 256, 7, 8, 32},
		{"8 to 7", 256, 8, 7, 32},
		{"jump 2 to 6", 256, 2, 6, 170},
		{"jump 8 to 1", 256, 8, 1, 224},
		{"seed's 16 regions 3 to 4", 16, 3, 4, 4},
		{"P=16 4 to 5", 16, 4, 5, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all := ids(max(c.from, c.to))
			before := grown(c.p, all[:c.from])
			after := Rebalance(before, all[:c.to])
			checkBalanced(t, after, all[:c.to])
			moved := Moved(before, after)
			if len(moved) != c.wantMoved {
				t.Fatalf("moved %d partitions, want %d", len(moved), c.wantMoved)
			}
			if c.from > 0 {
				if min := bruteMinMoves(before, all[:c.to]); len(moved) != min {
					t.Fatalf("moved %d partitions, the minimum is %d", len(moved), min)
				}
			}
			for _, part := range moved {
				switch {
				case c.to > c.from && c.from > 0 && !slices.Contains(all[c.from:c.to], after[part]):
					t.Fatalf("growing: partition %d moved to old node %s", part, after[part])
				case c.to < c.from && !slices.Contains(all[c.to:c.from], before[part]):
					t.Fatalf("shrinking: partition %d moved away from staying node %s", part, before[part])
				}
			}
		})
	}
}

func TestRebalanceTakesFromTheMostLoaded(t *testing.T) {
	// Unbalanced start: a holds 10, b 4, c 2 of 16. Adding d (quota 4 each)
	// must take 6 from a and 0 from b, giving d and c what they lack.
	a, b, c, d := contracts.NodeID("a"), contracts.NodeID("b"), contracts.NodeID("c"), contracts.NodeID("d")
	owners := slices.Concat(slices.Repeat([]contracts.NodeID{a}, 10), slices.Repeat([]contracts.NodeID{b}, 4), slices.Repeat([]contracts.NodeID{c}, 2))
	after := Rebalance(owners, []contracts.NodeID{a, b, c, d})
	checkBalanced(t, after, []contracts.NodeID{a, b, c, d})
	for _, p := range Moved(owners, after) {
		if owners[p] != a {
			t.Fatalf("partition %d moved from %s; only the overloaded a should give", p, owners[p])
		}
	}
	if got := len(Moved(owners, after)); got != 6 {
		t.Fatalf("moved %d, want 6", got)
	}
}

func TestRebalanceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		p := 1 << rng.IntN(9) // 1..256
		universe := ids(10)
		owners := make([]contracts.NodeID, p)
		for j := range owners {
			switch k := rng.IntN(12); {
			case k < 10:
				owners[j] = universe[k]
			case k == 10:
				owners[j] = "gone"
			}
		}
		n := 1 + rng.IntN(min(8, p))
		nodes := slices.Clone(universe)
		rng.Shuffle(len(nodes), func(a, b int) { nodes[a], nodes[b] = nodes[b], nodes[a] })
		nodes = nodes[:n]

		after := Rebalance(owners, nodes)
		if !slices.Equal(after, Rebalance(owners, nodes)) {
			t.Fatalf("case %d: not deterministic", i)
		}
		checkBalanced(t, after, nodes)
		if got, want := len(Moved(owners, after)), bruteMinMoves(owners, nodes); got != want {
			t.Fatalf("case %d (P=%d, n=%d): moved %d, minimum %d", i, p, n, got, want)
		}
	}
}

func TestRebalanceNoNodes(t *testing.T) {
	after := Rebalance(ids(4)[:2], nil)
	if !slices.Equal(after, []contracts.NodeID{"", ""}) {
		t.Fatalf("with no nodes every partition must be unowned, got %v", after)
	}
}

func TestRebalanceIsPure(t *testing.T) {
	owners := grown(64, ids(3))
	keep := slices.Clone(owners)
	nodes := ids(4)
	_ = Rebalance(owners, nodes)
	if !slices.Equal(owners, keep) || !slices.Equal(nodes, ids(4)) {
		t.Fatal("Rebalance modified its inputs")
	}
}
