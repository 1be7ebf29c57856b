package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/cachepool/cachepool/contracts"
)

// Reasons a put is not stored, as reported in PutResult.Reason.
const (
	ReasonTooLarge = "the item is larger than the node's capacity"
	ReasonStale    = "the node holds a newer version"
)

// ErrBadConfig reports a capacity or policy the store cannot use.
var ErrBadConfig = errors.New("store: bad config")

// PutResult tells what a put did.
type PutResult struct {
	// Stored is true when the entry now holds the put's value and version.
	Stored bool
	// Version is the version held after the put (0: the key is absent).
	Version uint64
	// Reason says why the put was not stored ("" when stored).
	Reason string
	// Evicted counts the entries evicted to make room.
	Evicted int
}

// Stats is a consistent snapshot of a store's counters and contents.
type Stats struct {
	contracts.Counters
	// Imported counts entries stored by Import (migration copies), which are
	// not client puts.
	Imported      uint64
	Items         int64
	Bytes         int64
	CapacityBytes int64
	Policy        string
}

type item struct {
	key         string
	value       []byte
	version     uint64
	contentType string
	prev, next  *item // recency list, most recent after the sentinel
	idx         int   // position in Store.slots
}

func (it *item) size() int64 { return int64(len(it.key) + len(it.value)) }

func (it *item) entry() contracts.Entry {
	return contracts.Entry{Key: it.key, Version: it.version, ContentType: it.contentType, Value: it.value}
}

// Store is an in-memory, capacity-bounded, versioned key-value store. The
// zero value is not usable; call New. A Store is safe for concurrent use.
type Store struct {
	mu    sync.Mutex
	items map[string]*item
	slots []*item // every item at its idx, for an O(1) uniform random pick
	// lru is the sentinel of the recency list, kept only under the lru
	// policy: lru.next is the most recently used, lru.prev the least.
	lru      item
	capacity int64
	bytes    int64
	policy   string
	isLRU    bool // policy == lru, for the hit path
	c        contracts.Counters
	imported uint64
}

// New returns an empty store bounded by capacityBytes (> 0) with policy
// "lru" or "random" (any spelling contracts.NormalizePolicy accepts).
func New(capacityBytes int64, policy string) (*Store, error) {
	p, err := checkConfig(capacityBytes, policy)
	if err != nil {
		return nil, err
	}
	s := &Store{items: make(map[string]*item), capacity: capacityBytes, policy: p, isLRU: p == contracts.PolicyLRU}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	return s, nil
}

func checkConfig(capacityBytes int64, policy string) (string, error) {
	p := contracts.NormalizePolicy(policy)
	var errs []error
	if capacityBytes <= 0 {
		errs = append(errs, fmt.Errorf("%w: capacity must be positive, got %d bytes", ErrBadConfig, capacityBytes))
	}
	if p == "" {
		errs = append(errs, fmt.Errorf("%w: unknown policy %q", ErrBadConfig, policy))
	}
	return p, errors.Join(errs...)
}

// Get returns the entry held for key and counts a get and a hit or a miss.
// Under the lru policy a hit makes the entry the most recently used.
func (s *Store) Get(key string) (contracts.Entry, bool) {
	s.mu.Lock()
	s.c.Gets++
	it := s.items[key]
	if it == nil {
		s.c.Misses++
		s.mu.Unlock()
		return contracts.Entry{}, false
	}
	s.c.Hits++
	if s.isLRU && s.lru.next != it {
		s.unlink(it)
		s.pushFront(it)
	}
	e := it.entry()
	s.mu.Unlock()
	return e, true
}

// Lookup returns the entry held for key without counting or touching recency.
func (s *Store) Lookup(key string) (contracts.Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it := s.items[key]; it != nil {
		return it.entry(), true
	}
	return contracts.Entry{}, false
}

// Put stores e when key is absent or e.Version is at least the held version,
// evicting by policy to make room; it counts one put whatever the outcome.
// An entry larger than the capacity is refused without evicting anything
// else; an older version held for the key is removed then, so it cannot be
// served after a newer image was written. Put takes ownership of e.Value.
func (s *Store) Put(e contracts.Entry) PutResult { return s.put(e, false) }

// Import is Put for a migration copy: the same rules, but it counts as
// imported rather than as a client put.
func (s *Store) Import(e contracts.Entry) PutResult { return s.put(e, true) }

func (s *Store) put(e contracts.Entry, imported bool) PutResult {
	size := e.Size()
	s.mu.Lock()
	defer s.mu.Unlock()
	if imported {
		s.imported++
	} else {
		s.c.Puts++
	}
	it := s.items[e.Key]
	if it != nil && e.Version < it.version {
		return PutResult{Version: it.version, Reason: ReasonStale}
	}
	if size > s.capacity {
		if it != nil {
			s.remove(it)
		}
		return PutResult{Reason: ReasonTooLarge}
	}
	if it != nil && s.bytes-it.size()+size <= s.capacity {
		// Fits in place: no eviction, no map update.
		s.bytes += size - it.size()
		it.value, it.version, it.contentType = e.Value, e.Version, e.ContentType
		if s.isLRU && s.lru.next != it {
			s.unlink(it)
			s.pushFront(it)
		}
		return PutResult{Stored: true, Version: e.Version}
	}
	if it != nil {
		s.remove(it) // taken out so eviction cannot pick it; reused below
	}
	evicted, victim := s.evictUntil(s.capacity - size)
	if it == nil {
		if victim != nil {
			it = victim // nothing outside the store points at an item: reuse it
			*it = item{}
		} else {
			it = &item{}
		}
		it.key = e.Key
	}
	it.value, it.version, it.contentType = e.Value, e.Version, e.ContentType
	s.insert(it)
	return PutResult{Stored: true, Version: e.Version, Evicted: evicted}
}

// Invalidate removes key when its held version is at most belowOrAt
// (belowOrAt 0 removes any version). It reports whether it removed it.
func (s *Store) Invalidate(key string, belowOrAt uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[key]
	if it == nil || (belowOrAt != 0 && it.version > belowOrAt) {
		return false
	}
	s.remove(it)
	return true
}

// DeleteIfVersion removes key only when it still holds exactly version.
func (s *Store) DeleteIfVersion(key string, version uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[key]
	if it == nil || it.version != version {
		return false
	}
	s.remove(it)
	return true
}

// Clear removes every entry and returns how many items and bytes it held.
// Counters other than items and bytes are kept.
func (s *Store) Clear() (items, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items, bytes = int64(len(s.items)), s.bytes
	s.items = make(map[string]*item)
	clear(s.slots)
	s.slots = s.slots[:0]
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	s.bytes = 0
	return items, bytes
}

// SetConfig changes the capacity and policy live. A smaller capacity evicts
// by the new policy before SetConfig returns; a policy change keeps every
// entry. It returns the number of entries evicted.
func (s *Store) SetConfig(capacityBytes int64, policy string) (int, error) {
	p, err := checkConfig(capacityBytes, policy)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case p == contracts.PolicyLRU && s.policy != p:
		// Rebuild the recency list; the order starts as the slots' order.
		for _, it := range s.slots {
			s.pushFront(it)
		}
	case p != contracts.PolicyLRU && s.policy == contracts.PolicyLRU:
		// Drop the list so no stale link keeps a removed value alive.
		for it := s.lru.next; it != &s.lru; {
			next := it.next
			it.prev, it.next = nil, nil
			it = next
		}
		s.lru.next, s.lru.prev = &s.lru, &s.lru
	}
	s.capacity, s.policy, s.isLRU = capacityBytes, p, p == contracts.PolicyLRU
	n, _ := s.evictUntil(s.capacity)
	return n, nil
}

// Config returns the capacity in bytes and the normalized policy.
func (s *Store) Config() (capacityBytes int64, policy string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacity, s.policy
}

// Stats returns the counters and contents at one moment.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Counters:      s.c,
		Imported:      s.imported,
		Items:         int64(len(s.items)),
		Bytes:         s.bytes,
		CapacityBytes: s.capacity,
		Policy:        s.policy,
	}
}

// evictUntil evicts by policy until the stored bytes are at most limit
// (limit >= 0) and returns how many entries it evicted and the last one.
func (s *Store) evictUntil(limit int64) (n int, victim *item) {
	for s.bytes > limit && len(s.slots) > 0 {
		if !s.isLRU {
			victim = s.slots[rand.IntN(len(s.slots))]
		} else {
			victim = s.lru.prev
		}
		s.remove(victim)
		n++
	}
	s.c.Evictions += uint64(n)
	return n, victim
}

func (s *Store) insert(it *item) {
	s.items[it.key] = it
	it.idx = len(s.slots)
	s.slots = append(s.slots, it)
	if s.isLRU {
		s.pushFront(it)
	}
	s.bytes += it.size()
}

func (s *Store) remove(it *item) {
	delete(s.items, it.key)
	last := s.slots[len(s.slots)-1]
	s.slots[it.idx] = last
	last.idx = it.idx
	s.slots[len(s.slots)-1] = nil
	s.slots = s.slots[:len(s.slots)-1]
	if it.next != nil {
		s.unlink(it)
	}
	s.bytes -= it.size()
}

func (s *Store) pushFront(it *item) {
	it.prev, it.next = &s.lru, s.lru.next
	s.lru.next.prev = it
	s.lru.next = it
}

func (s *Store) unlink(it *item) {
	it.prev.next = it.next
	it.next.prev = it.prev
	it.prev, it.next = nil, nil
}
