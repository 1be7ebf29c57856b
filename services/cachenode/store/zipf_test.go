package store

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

// exactLRU is a reference model: a byte-bounded LRU kept with a plain
// doubly-linked list, evicting from the back until a new entry fits.
type exactLRU struct {
	capacity, bytes int64
	order           *list.List // front: most recently used
	at              map[string]*list.Element
	size            map[string]int64
}

func newExactLRU(capacity int64) *exactLRU {
	return &exactLRU{capacity: capacity, order: list.New(), at: map[string]*list.Element{}, size: map[string]int64{}}
}

func (m *exactLRU) get(key string) bool {
	el, ok := m.at[key]
	if ok {
		m.order.MoveToFront(el)
	}
	return ok
}

func (m *exactLRU) put(key string, size int64) {
	if size > m.capacity {
		return
	}
	if el, ok := m.at[key]; ok {
		m.bytes -= m.size[key]
		m.order.Remove(el)
		delete(m.at, key)
	}
	for m.bytes+size > m.capacity {
		back := m.order.Back()
		k := back.Value.(string)
		m.order.Remove(back)
		m.bytes -= m.size[k]
		delete(m.at, k)
	}
	m.at[key] = m.order.PushFront(key)
	m.size[key] = size
	m.bytes += size
}

// zipfTrace returns n read-through requests over keys drawn from a Zipf law,
// with a fixed, varied size per key, and the total size of all keys.
func zipfTrace(n, keys int, seed uint64) (trace []int, sizes []int, total int64) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	z := rand.NewZipf(rng, 1.1, 4, uint64(keys-1))
	sizes = make([]int, keys)
	for i := range sizes {
		sizes[i] = 500 + rng.IntN(3500)
		total += int64(sizes[i])
	}
	trace = make([]int, n)
	for i := range trace {
		trace[i] = int(z.Uint64())
	}
	return trace, sizes, total
}

func hitRatio(trace, sizes []int, get func(k string, size int) bool) float64 {
	hits := 0
	for _, i := range trace {
		if get(fmt.Sprintf("img-%d", i), sizes[i]) {
			hits++
		}
	}
	return float64(hits) / float64(len(trace))
}

func storeHitRatio(t *testing.T, policy string, capacity int64, trace, sizes []int) float64 {
	s := mustNew(t, capacity, policy)
	value := make([]byte, 4096)
	r := hitRatio(trace, sizes, func(k string, size int) bool {
		if _, ok := s.Get(k); ok {
			return true
		}
		s.Put(contracts.Entry{Key: k, Version: 1, Value: value[:size-len(k)]})
		return false
	})
	check(t, s)
	return r
}

func TestZipfHitRatios(t *testing.T) {
	for _, fraction := range []int64{5, 10, 25} { // capacity as a percentage of all keys' bytes
		t.Run(fmt.Sprintf("capacity=%d%%", fraction), func(t *testing.T) {
			trace, sizes, total := zipfTrace(200_000, 20_000, 42)
			capacity := total * fraction / 100
			model := newExactLRU(capacity)
			exact := hitRatio(trace, sizes, func(k string, size int) bool {
				if model.get(k) {
					return true
				}
				model.put(k, int64(size))
				return false
			})
			lru := storeHitRatio(t, contracts.PolicyLRU, capacity, trace, sizes)
			random := storeHitRatio(t, contracts.PolicyRandom, capacity, trace, sizes)
			t.Logf("hit ratio: exact LRU model %.4f, store lru %.4f, store random %.4f (%.3f × lru)", exact, lru, random, random/lru)
			if exact <= 0.05 || exact >= 0.99 {
				t.Fatalf("the trace does not exercise eviction: exact LRU hit ratio %.4f", exact)
			}
			if d := lru - exact; d > 0.02*exact || d < -0.02*exact {
				t.Errorf("store lru hit ratio %.4f is not within 2%% of the exact model's %.4f", lru, exact)
			}
			if random < 0.9*lru {
				t.Errorf("random hit ratio %.4f < 0.9 × lru %.4f", random, lru)
			}
		})
	}
}
