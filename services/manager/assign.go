package manager

import (
	"slices"

	"github.com/cachepool/cachepool/contracts"
)

// Rebalance returns a new owner for every partition so that exactly the
// nodes in nodes hold partitions, each ⌊P/n⌋ or ⌈P/n⌉ of them, while moving
// as few partitions as possible away from their current owner.
//
// owners is the current assignment (P entries; "" or an id not in nodes
// means the partition must move). The result is deterministic: the same
// inputs give the same output. The ⌈P/n⌉ quotas go to the nodes that hold
// the most partitions already (ties: earlier in nodes), an over-quota node
// gives up its highest partitions, and freed partitions go, ascending, to
// the node with the largest remaining deficit (ties: earlier in nodes).
// Both choices make the number of moved partitions the minimum any balanced
// assignment needs. With no nodes every partition is unowned ("").
//
// It is pure: no I/O, owners and nodes are not modified.
func Rebalance(owners []contracts.NodeID, nodes []contracts.NodeID) []contracts.NodeID {
	p := len(owners)
	out := make([]contracts.NodeID, p)
	if len(nodes) == 0 || p == 0 {
		return out
	}
	index := make(map[contracts.NodeID]int, len(nodes))
	for i, id := range nodes {
		if _, dup := index[id]; !dup {
			index[id] = i
		}
	}
	nodes = uniq(nodes)
	held := make([][]int, len(nodes)) // partitions each node keeps candidates for, ascending
	var free []int
	for part, o := range owners {
		if i, ok := index[o]; ok {
			held[i] = append(held[i], part)
		} else {
			free = append(free, part)
		}
	}

	quota := quotas(held, p)
	for i := range nodes {
		if extra := len(held[i]) - quota[i]; extra > 0 {
			keep := len(held[i]) - extra
			free = append(free, held[i][keep:]...)
			held[i] = held[i][:keep]
		}
	}
	slices.Sort(free)

	for i, ps := range held {
		for _, part := range ps {
			out[part] = nodes[i]
		}
	}
	for _, part := range free {
		best := -1
		for i := range nodes {
			d := quota[i] - len(held[i])
			if d > 0 && (best < 0 || d > quota[best]-len(held[best])) {
				best = i
			}
		}
		held[best] = append(held[best], part)
		out[part] = nodes[best]
	}
	return out
}

// quotas gives each node ⌊p/n⌋, plus one for the p mod n nodes holding the
// most partitions (ties: earlier node first).
func quotas(held [][]int, p int) []int {
	n := len(held)
	base, extra := p/n, p%n
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(held[b]) - len(held[a]) })
	q := make([]int, n)
	for rank, i := range order {
		q[i] = base
		if rank < extra {
			q[i]++
		}
	}
	return q
}

func uniq(nodes []contracts.NodeID) []contracts.NodeID {
	seen := make(map[contracts.NodeID]bool, len(nodes))
	out := make([]contracts.NodeID, 0, len(nodes))
	for _, id := range nodes {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// Moved lists the partitions whose owner differs between before and after.
func Moved(before, after []contracts.NodeID) []int {
	var out []int
	for p := range after {
		if p >= len(before) || before[p] != after[p] {
			out = append(out, p)
		}
	}
	return out
}

// Load counts the partitions each node owns.
func Load(owners []contracts.NodeID) map[contracts.NodeID]int {
	out := make(map[contracts.NodeID]int)
	for _, o := range owners {
		if o != "" {
			out[o]++
		}
	}
	return out
}
