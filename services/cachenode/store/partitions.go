package store

import "github.com/cachepool/cachepool/contracts"

// PartitionSet selects partitions of a table with a given partition count.
type PartitionSet struct {
	count int
	in    []bool
}

// NewPartitionSet selects partitions (out-of-range numbers are ignored) of a
// table with count partitions (contracts.ValidatePartitions).
func NewPartitionSet(partitions []int, count int) PartitionSet {
	ps := PartitionSet{count: count, in: make([]bool, max(count, 1))}
	for _, p := range partitions {
		if p >= 0 && p < len(ps.in) {
			ps.in[p] = true
		}
	}
	return ps
}

// Contains reports whether key falls in one of the selected partitions.
func (ps PartitionSet) Contains(key string) bool {
	return ps.in[contracts.Partition(key, ps.count)]
}

// Keys returns the keys held at this moment that fall in ps. The keys are
// copied under the lock; their partitions are computed outside it, so a
// large store does not stall gets while it hashes.
func (s *Store) Keys(ps PartitionSet) []string {
	s.mu.Lock()
	all := make([]string, len(s.slots))
	for i, it := range s.slots {
		all[i] = it.key
	}
	s.mu.Unlock()
	out := all[:0]
	for _, k := range all {
		if ps.Contains(k) {
			out = append(out, k)
		}
	}
	return out
}

// Snapshot returns the entries held in ps. Entries changed after Keys ran
// are returned as they are when looked up; removed ones are left out.
func (s *Store) Snapshot(ps PartitionSet) []contracts.Entry {
	keys := s.Keys(ps)
	out := make([]contracts.Entry, 0, len(keys))
	for _, k := range keys {
		if e, ok := s.Lookup(k); ok {
			out = append(out, e)
		}
	}
	return out
}

// DropPartitions removes every entry in ps and returns how many items and
// bytes it removed. Removals are not counted as evictions.
func (s *Store) DropPartitions(ps PartitionSet) (items, bytes int64) {
	keys := s.Keys(ps)
	const chunk = 256 // keep each lock hold short
	for len(keys) > 0 {
		n := min(chunk, len(keys))
		s.mu.Lock()
		for _, k := range keys[:n] {
			if it := s.items[k]; it != nil {
				items++
				bytes += it.size()
				s.remove(it)
			}
		}
		s.mu.Unlock()
		keys = keys[n:]
	}
	return items, bytes
}
