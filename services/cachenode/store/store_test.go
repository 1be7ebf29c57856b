package store

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

// check verifies the store's invariants: the byte bound, the byte count,
// and that the map, the slots and the recency list hold the same items.
func check(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes > s.capacity {
		t.Fatalf("stored %d bytes over capacity %d", s.bytes, s.capacity)
	}
	var sum int64
	for i, it := range s.slots {
		if it.idx != i {
			t.Fatalf("slot %d holds item with idx %d", i, it.idx)
		}
		if s.items[it.key] != it {
			t.Fatalf("slot %d item %q not in the map", i, it.key)
		}
		sum += it.size()
	}
	if sum != s.bytes {
		t.Fatalf("bytes counter %d, sum of items %d", s.bytes, sum)
	}
	if len(s.items) != len(s.slots) {
		t.Fatalf("map has %d items, slots %d", len(s.items), len(s.slots))
	}
	n := 0
	for it := s.lru.next; it != &s.lru; it = it.next {
		if it.next.prev != it {
			t.Fatalf("broken recency list at %q", it.key)
		}
		n++
	}
	want := len(s.items)
	if s.policy != contracts.PolicyLRU {
		want = 0 // the list is kept only under lru
		for _, it := range s.slots {
			if it.prev != nil || it.next != nil {
				t.Fatalf("item %q keeps recency links under %s", it.key, s.policy)
			}
		}
	}
	if n != want {
		t.Fatalf("recency list has %d items, want %d", n, want)
	}
}

func mustNew(t *testing.T, capacity int64, policy string) *Store {
	t.Helper()
	s, err := New(capacity, policy)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ent(key string, size int, version uint64) contracts.Entry {
	return contracts.Entry{Key: key, Version: version, ContentType: "image/png", Value: make([]byte, size-len(key))}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		capacity int64
		policy   string
	}{{0, "lru"}, {-1, "lru"}, {10, "lfu"}, {10, ""}} {
		if _, err := New(tc.capacity, tc.policy); err == nil {
			t.Errorf("New(%d, %q) accepted", tc.capacity, tc.policy)
		}
	}
	s := mustNew(t, 10, "rr")
	if _, p := s.Config(); p != contracts.PolicyRandom {
		t.Errorf("policy rr normalized to %q", p)
	}
}

func TestCapacityNeverExceededRandomWorkload(t *testing.T) {
	for _, policy := range []string{contracts.PolicyLRU, contracts.PolicyRandom} {
		t.Run(policy, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			s := mustNew(t, 10_000, policy)
			versions := map[string]uint64{}
			for i := 0; i < 20_000; i++ {
				key := fmt.Sprintf("k%d", rng.IntN(300))
				switch op := rng.IntN(100); {
				case op < 45:
					if e, ok := s.Get(key); ok && e.Key != key {
						t.Fatalf("get %q returned %q", key, e.Key)
					}
				case op < 85:
					v := versions[key] + uint64(rng.IntN(2))
					versions[key] = v
					r := s.Put(ent(key, 4+rng.IntN(1200), v))
					if r.Stored && r.Version != v {
						t.Fatalf("stored put reports version %d, want %d", r.Version, v)
					}
				case op < 92:
					s.Invalidate(key, uint64(rng.IntN(3)))
				case op < 95:
					s.DeleteIfVersion(key, versions[key])
				case op < 97:
					if _, err := s.SetConfig(int64(2_000+rng.IntN(12_000)), []string{"lru", "random"}[rng.IntN(2)]); err != nil {
						t.Fatal(err)
					}
				case op < 98:
					s.DropPartitions(NewPartitionSet([]int{rng.IntN(16)}, 16))
				default:
					s.Clear()
				}
				check(t, s)
			}
		})
	}
}

func TestOversizeRefusedWithoutEviction(t *testing.T) {
	s := mustNew(t, 1000, contracts.PolicyLRU)
	for i := range 5 {
		s.Put(ent(fmt.Sprintf("k%d", i), 100, 1))
	}
	before := s.Stats()
	r := s.Put(ent("big", 1001, 1))
	if r.Stored || r.Reason != ReasonTooLarge || r.Evicted != 0 {
		t.Fatalf("oversize put: %+v", r)
	}
	after := s.Stats()
	if after.Items != before.Items || after.Bytes != before.Bytes || after.Evictions != before.Evictions {
		t.Fatalf("oversize put changed the store: before %+v after %+v", before, after)
	}
	// Exactly the capacity fits, evicting everything else.
	if r := s.Put(ent("full", 1000, 1)); !r.Stored || r.Evicted != 5 {
		t.Fatalf("put of exactly the capacity: %+v", r)
	}
	check(t, s)
}

func TestOversizeNewerVersionRemovesOlderCopy(t *testing.T) {
	s := mustNew(t, 1000, contracts.PolicyLRU)
	s.Put(ent("k", 100, 3))
	s.Put(ent("other", 100, 1))
	if r := s.Put(ent("k", 2000, 2)); r.Stored || r.Reason != ReasonStale || r.Version != 3 {
		t.Fatalf("older oversize put: %+v", r)
	}
	if _, ok := s.Lookup("k"); !ok {
		t.Fatal("an older oversize put removed the newer entry")
	}
	if r := s.Put(ent("k", 2000, 4)); r.Stored || r.Reason != ReasonTooLarge || r.Version != 0 {
		t.Fatalf("newer oversize put: %+v", r)
	}
	if _, ok := s.Lookup("k"); ok {
		t.Fatal("the older copy survived a newer oversize put")
	}
	if _, ok := s.Lookup("other"); !ok {
		t.Fatal("an oversize put removed another key")
	}
	check(t, s)
}

func TestVersionRule(t *testing.T) {
	tests := []struct {
		name       string
		held       uint64 // 0: absent
		put        uint64
		wantStored bool
		wantHeld   uint64
	}{
		{"absent", 0, 5, true, 5},
		{"newer", 5, 6, true, 6},
		{"equal", 5, 5, true, 5},
		{"older", 5, 4, false, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, 1000, contracts.PolicyLRU)
			if tc.held != 0 {
				s.Put(contracts.Entry{Key: "k", Version: tc.held, Value: []byte("held")})
			}
			r := s.Put(contracts.Entry{Key: "k", Version: tc.put, Value: []byte("new"), ContentType: "image/gif"})
			if r.Stored != tc.wantStored || r.Version != tc.wantHeld {
				t.Fatalf("put: %+v, want stored=%v version=%d", r, tc.wantStored, tc.wantHeld)
			}
			e, _ := s.Lookup("k")
			if e.Version != tc.wantHeld {
				t.Fatalf("held version %d, want %d", e.Version, tc.wantHeld)
			}
			wantValue := "held"
			if tc.wantStored {
				wantValue = "new"
				if e.ContentType != "image/gif" {
					t.Fatalf("content type %q", e.ContentType)
				}
			}
			if string(e.Value) != wantValue {
				t.Fatalf("value %q, want %q", e.Value, wantValue)
			}
			check(t, s)
		})
	}
}

func TestInvalidateRule(t *testing.T) {
	tests := []struct {
		name      string
		held      uint64
		belowOrAt uint64
		removed   bool
	}{
		{"any version", 7, 0, true},
		{"held below", 7, 8, true},
		{"held equal", 7, 7, true},
		{"held above", 7, 6, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, 1000, contracts.PolicyLRU)
			s.Put(ent("k", 50, tc.held))
			if got := s.Invalidate("k", tc.belowOrAt); got != tc.removed {
				t.Fatalf("Invalidate = %v, want %v", got, tc.removed)
			}
			if _, ok := s.Lookup("k"); ok == tc.removed {
				t.Fatalf("present after invalidate = %v", ok)
			}
			check(t, s)
		})
	}
	s := mustNew(t, 1000, contracts.PolicyLRU)
	if s.Invalidate("absent", 0) {
		t.Fatal("invalidate of an absent key reports a removal")
	}
}

func TestDeleteIfVersion(t *testing.T) {
	s := mustNew(t, 1000, contracts.PolicyLRU)
	s.Put(ent("k", 50, 3))
	if s.DeleteIfVersion("k", 2) || s.DeleteIfVersion("k", 4) {
		t.Fatal("deleted on a different version")
	}
	if !s.DeleteIfVersion("k", 3) {
		t.Fatal("did not delete on the same version")
	}
	check(t, s)
}

func TestPolicyChangeKeepsEntries(t *testing.T) {
	for _, from := range []string{contracts.PolicyLRU, contracts.PolicyRandom} {
		to := map[string]string{contracts.PolicyLRU: contracts.PolicyRandom, contracts.PolicyRandom: contracts.PolicyLRU}[from]
		s := mustNew(t, 10_000, from)
		for i := range 50 {
			s.Put(ent(fmt.Sprintf("k%02d", i), 100, 1))
		}
		before := s.Stats()
		n, err := s.SetConfig(10_000, to)
		if err != nil || n != 0 {
			t.Fatalf("%s→%s: evicted %d, err %v", from, to, n, err)
		}
		after := s.Stats()
		if after.Items != before.Items || after.Bytes != before.Bytes || after.Policy != to {
			t.Fatalf("%s→%s: before %+v after %+v", from, to, before, after)
		}
		for i := range 50 {
			if _, ok := s.Lookup(fmt.Sprintf("k%02d", i)); !ok {
				t.Fatalf("%s→%s lost k%02d", from, to, i)
			}
		}
		check(t, s)
	}
}

func TestSmallerCapacityEvictsAtOnce(t *testing.T) {
	for _, policy := range []string{contracts.PolicyLRU, contracts.PolicyRandom} {
		s := mustNew(t, 10_000, policy)
		for i := range 100 {
			s.Put(ent(fmt.Sprintf("k%02d", i), 100, 1))
		}
		n, err := s.SetConfig(2_550, policy)
		if err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.Bytes > 2_550 || st.Items != 25 || n != 75 || st.Evictions != 75 {
			t.Fatalf("%s: after shrink %+v, evicted %d", policy, st, n)
		}
		check(t, s)
	}
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	s := mustNew(t, 300, contracts.PolicyLRU)
	s.Put(ent("a", 100, 1))
	s.Put(ent("b", 100, 1))
	s.Put(ent("c", 100, 1))
	s.Get("a") // b is now the least recently used
	if r := s.Put(ent("d", 100, 1)); r.Evicted != 1 {
		t.Fatalf("put d: %+v", r)
	}
	if _, ok := s.Lookup("b"); ok {
		t.Fatal("b survived, but it was the least recently used")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := s.Lookup(k); !ok {
			t.Fatalf("%s was evicted", k)
		}
	}
}

func TestReplacingAKeyDoesNotEvictItself(t *testing.T) {
	s := mustNew(t, 300, contracts.PolicyLRU)
	s.Put(ent("a", 100, 1))
	s.Put(ent("b", 100, 1))
	s.Put(ent("c", 100, 1))
	// a is the least recently used; growing it needs 100 more bytes.
	r := s.Put(ent("a", 200, 2))
	if !r.Stored || r.Evicted != 1 {
		t.Fatalf("replace a: %+v", r)
	}
	if e, ok := s.Lookup("a"); !ok || e.Version != 2 {
		t.Fatalf("a after replace: %+v %v", e, ok)
	}
	if _, ok := s.Lookup("b"); ok {
		t.Fatal("b should have been evicted to make room")
	}
	check(t, s)
}

func TestCounters(t *testing.T) {
	s := mustNew(t, 250, contracts.PolicyLRU)
	s.Get("a")                  // miss
	s.Put(ent("a", 100, 1))     // put
	s.Put(ent("b", 100, 1))     // put
	s.Get("a")                  // hit; b is now the least recently used
	s.Put(ent("c", 100, 1))     // put, evicts b
	s.Put(ent("a", 100, 0))     // put, stale: not stored
	s.Import(ent("d", 100, 1))  // imported, evicts a
	s.Put(ent("huge", 1000, 1)) // put, refused
	s.Get("b")                  // miss
	s.Get("c")                  // hit
	s.Invalidate("c", 0)        // not an eviction
	items, bytes := s.Clear()   // d
	if items != 1 || bytes != 100 {
		t.Fatalf("clear returned %d items %d bytes", items, bytes)
	}
	got := s.Stats()
	want := Stats{
		Counters:      contracts.Counters{Gets: 4, Hits: 2, Misses: 2, Puts: 5, Evictions: 2},
		Imported:      1,
		CapacityBytes: 250,
		Policy:        contracts.PolicyLRU,
	}
	if got != want {
		t.Fatalf("stats\n got %+v\nwant %+v", got, want)
	}
}

func TestPartitionsSnapshotAndDrop(t *testing.T) {
	const p = 16
	s := mustNew(t, 1<<20, contracts.PolicyLRU)
	want := map[int]int{}
	for i := range 500 {
		k := fmt.Sprintf("key-%d", i)
		s.Put(ent(k, 50, uint64(i+1)))
		want[contracts.Partition(k, p)]++
	}
	ps := NewPartitionSet([]int{3, 7}, p)
	snap := s.Snapshot(ps)
	if len(snap) != want[3]+want[7] || len(snap) == 0 {
		t.Fatalf("snapshot has %d entries, want %d", len(snap), want[3]+want[7])
	}
	for _, e := range snap {
		if q := contracts.Partition(e.Key, p); q != 3 && q != 7 {
			t.Fatalf("snapshot entry %q is in partition %d", e.Key, q)
		}
		if !strings.HasPrefix(e.Key, "key-") || e.Version == 0 || len(e.Value) != 50-len(e.Key) {
			t.Fatalf("snapshot entry %+v", e)
		}
	}
	items, bytes := s.DropPartitions(ps)
	if items != int64(len(snap)) || bytes != int64(50*len(snap)) {
		t.Fatalf("dropped %d items %d bytes, want %d %d", items, bytes, len(snap), 50*len(snap))
	}
	if st := s.Stats(); st.Items != int64(500-len(snap)) || st.Evictions != 0 {
		t.Fatalf("after drop: %+v", st)
	}
	if len(s.Snapshot(ps)) != 0 {
		t.Fatal("entries remain in dropped partitions")
	}
	check(t, s)
}

func TestConcurrentUse(t *testing.T) {
	s := mustNew(t, 50_000, contracts.PolicyLRU)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 5_000; i++ {
				key := fmt.Sprintf("k%d", rng.IntN(200))
				switch rng.IntN(10) {
				case 0:
					s.Invalidate(key, 0)
				case 1, 2, 3:
					s.Put(ent(key, 10+rng.IntN(1000), uint64(rng.IntN(5))))
				case 4:
					if rng.IntN(50) == 0 {
						_, _ = s.SetConfig(int64(5_000+rng.IntN(50_000)), []string{"lru", "random"}[rng.IntN(2)])
					}
				case 5:
					s.Snapshot(NewPartitionSet([]int{rng.IntN(4)}, 4))
				default:
					if e, ok := s.Get(key); ok && e.Key != key {
						errs <- fmt.Errorf("get %q returned %q", key, e.Key)
						return
					}
				}
				if st := s.Stats(); st.Bytes > st.CapacityBytes {
					errs <- fmt.Errorf("over capacity: %+v", st)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	check(t, s)
	st := s.Stats()
	if st.Gets != st.Hits+st.Misses {
		t.Fatalf("gets %d != hits %d + misses %d", st.Gets, st.Hits, st.Misses)
	}
}
