package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

// mutexMap is the baseline of the "≤ 2× a mutex-protected map" goal: the
// same gets and sets on the same keys and values, nothing else.
type mutexMap struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (m *mutexMap) get(k string) ([]byte, bool) {
	m.mu.Lock()
	v, ok := m.m[k]
	m.mu.Unlock()
	return v, ok
}

func (m *mutexMap) set(k string, v []byte) {
	m.mu.Lock()
	m.m[k] = v
	m.mu.Unlock()
}

const benchKeys = 1 << 14

func benchData() ([]string, []byte) {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("image-%08d.png", i)
	}
	return keys, make([]byte, 1024)
}

type kv interface {
	get(k string) bool
	set(k string, v []byte)
}

type mapKV struct{ m *mutexMap }

func (m mapKV) get(k string) bool      { _, ok := m.m.get(k); return ok }
func (m mapKV) set(k string, v []byte) { m.m.set(k, v) }

type storeKV struct{ s *Store }

func (s storeKV) get(k string) bool { _, ok := s.s.Get(k); return ok }
func (s storeKV) set(k string, v []byte) {
	s.s.Put(contracts.Entry{Key: k, Version: 1, ContentType: "image/png", Value: v})
}

// targets returns filled instances of the baseline and the store (capacity
// above the working set, so sets replace and gets hit in both).
func targets(b *testing.B) []struct {
	name string
	kv   kv
} {
	keys, value := benchData()
	m := mapKV{&mutexMap{m: map[string][]byte{}}}
	lru, _ := New(1<<30, contracts.PolicyLRU)
	random, _ := New(1<<30, contracts.PolicyRandom)
	out := []struct {
		name string
		kv   kv
	}{{"map", m}, {"store-lru", storeKV{lru}}, {"store-random", storeKV{random}}}
	for _, t := range out {
		for _, k := range keys {
			t.kv.set(k, value)
		}
	}
	return out
}

func BenchmarkGet(b *testing.B) {
	keys, _ := benchData()
	for _, t := range targets(b) {
		b.Run(t.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if !t.kv.get(keys[i&(benchKeys-1)]) {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

func BenchmarkSet(b *testing.B) {
	keys, value := benchData()
	for _, t := range targets(b) {
		b.Run(t.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				t.kv.set(keys[i&(benchKeys-1)], value)
				i++
			}
		})
	}
}

func BenchmarkGetParallel(b *testing.B) {
	keys, _ := benchData()
	for _, t := range targets(b) {
		b.Run(t.name, func(b *testing.B) {
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					t.kv.get(keys[i&(benchKeys-1)])
					i++
				}
			})
		})
	}
}

func BenchmarkSetParallel(b *testing.B) {
	keys, value := benchData()
	for _, t := range targets(b) {
		b.Run(t.name, func(b *testing.B) {
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					t.kv.set(keys[i&(benchKeys-1)], value)
					i++
				}
			})
		})
	}
}

// BenchmarkMixedParallel is 90 % gets and 10 % sets, the cache's usual mix.
func BenchmarkMixedParallel(b *testing.B) {
	keys, value := benchData()
	for _, t := range targets(b) {
		b.Run(t.name, func(b *testing.B) {
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					k := keys[i&(benchKeys-1)]
					if i%10 == 0 {
						t.kv.set(k, value)
					} else {
						t.kv.get(k)
					}
					i++
				}
			})
		})
	}
}

// BenchmarkSetEvicting measures sets of new keys into a full store, each
// evicting one entry; the map baseline deletes the oldest key itself.
func BenchmarkSetEvicting(b *testing.B) {
	_, value := benchData()
	b.Run("map", func(b *testing.B) {
		m := &mutexMap{m: map[string][]byte{}}
		names := make([]string, 2*benchKeys)
		for i := range names {
			names[i] = fmt.Sprintf("image-%08d.png", i)
		}
		for i := range benchKeys {
			m.set(names[i], value)
		}
		i := benchKeys
		for b.Loop() {
			m.mu.Lock()
			delete(m.m, names[(i-benchKeys)&(2*benchKeys-1)])
			m.m[names[i&(2*benchKeys-1)]] = value
			m.mu.Unlock()
			i++
		}
	})
	for _, policy := range []string{contracts.PolicyLRU, contracts.PolicyRandom} {
		b.Run("store-"+policy, func(b *testing.B) {
			names := make([]string, 2*benchKeys)
			for i := range names {
				names[i] = fmt.Sprintf("image-%08d.png", i)
			}
			s, _ := New(int64(benchKeys*(len(names[0])+len(value))), policy)
			for i := range benchKeys {
				s.Put(contracts.Entry{Key: names[i], Version: 1, Value: value})
			}
			i := benchKeys
			for b.Loop() {
				s.Put(contracts.Entry{Key: names[i&(2*benchKeys-1)], Version: 1, Value: value})
				i++
			}
		})
	}
}
