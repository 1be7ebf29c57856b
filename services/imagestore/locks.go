package imagestore

import (
	"hash/maphash"
	"sync"
)

// stripes is the number of per-key lock stripes.
const stripes = 256

// keyLocks serializes work on one key inside one instance: two keys may
// share a stripe (and wait for each other briefly), one key always maps to
// the same stripe.
type keyLocks struct {
	seed maphash.Seed
	mu   [stripes]sync.Mutex
}

func newKeyLocks() *keyLocks { return &keyLocks{seed: maphash.MakeSeed()} }

// lock locks key's stripe and returns its unlock.
func (l *keyLocks) lock(key string) func() {
	m := &l.mu[maphash.String(l.seed, key)%stripes]
	m.Lock()
	return m.Unlock
}

// lockAll locks every stripe in order (no deadlock with lock) and returns
// the unlock of all of them.
func (l *keyLocks) lockAll() func() {
	for i := range l.mu {
		l.mu[i].Lock()
	}
	return func() {
		for i := range l.mu {
			l.mu[i].Unlock()
		}
	}
}
