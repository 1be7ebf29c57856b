package contracts

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// DefaultPartitions is the default partition count P.
const DefaultPartitions = 256

// ValidatePartitions reports whether p is a usable partition count: a power
// of two from 1 to 65536.
func ValidatePartitions(p int) error {
	if p < 1 || p > 1<<16 || bits.OnesCount(uint(p)) != 1 {
		return fmt.Errorf("partitions must be a power of two from 1 to 65536, got %d", p)
	}
	return nil
}

// Partition maps a key to one of p partitions (p a power of two): the top
// log2(p) bits of the key's MD5. P = 16 reproduces the original's 16 regions
// (the first hex digit of the MD5).
func Partition(key string, p int) int {
	if p <= 1 {
		return 0
	}
	sum := md5.Sum([]byte(key))
	top := binary.BigEndian.Uint32(sum[:4])
	shift := 32 - bits.TrailingZeros(uint(p))
	return int(top >> shift)
}

// PartitionTable assigns every partition to a node. It is stored under
// KeyTable in BucketPool; the manager is its only writer and increases Epoch
// on every change. Everyone else watches it.
type PartitionTable struct {
	Epoch      uint64   `json:"epoch"`
	Partitions int      `json:"partitions"`
	Owners     []NodeID `json:"owners"`
	// Previous holds, while a migration runs, the former owner of each moving
	// partition ("" where the partition does not move). A miss on the new
	// owner asks the previous owner before the store.
	Previous []NodeID `json:"previous,omitempty"`
	// Nodes lists the active nodes in a stable order.
	Nodes     []NodeID  `json:"nodes"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ErrNoOwner reports a table with no node to route to.
var ErrNoOwner = errors.New("contracts: the partition table has no owner for this key")

// Owner returns the node that owns key, and the previous owner while the
// key's partition moves ("" otherwise).
func (t *PartitionTable) Owner(key string) (owner, previous NodeID, err error) {
	if t == nil || len(t.Owners) == 0 {
		return "", "", ErrNoOwner
	}
	p := Partition(key, t.Partitions)
	if p >= len(t.Owners) || t.Owners[p] == "" {
		return "", "", ErrNoOwner
	}
	if p < len(t.Previous) {
		previous = t.Previous[p]
	}
	return t.Owners[p], previous, nil
}

// Validate checks the table's shape.
func (t *PartitionTable) Validate() error {
	var errs []error
	if err := ValidatePartitions(t.Partitions); err != nil {
		errs = append(errs, err)
	}
	if len(t.Owners) != t.Partitions {
		errs = append(errs, fmt.Errorf("owners has %d entries, want %d", len(t.Owners), t.Partitions))
	}
	if len(t.Previous) != 0 && len(t.Previous) != t.Partitions {
		errs = append(errs, fmt.Errorf("previous has %d entries, want 0 or %d", len(t.Previous), t.Partitions))
	}
	return errors.Join(errs...)
}

// PartitionsOf returns the partitions owned by id, ascending.
func (t *PartitionTable) PartitionsOf(id NodeID) []int {
	var out []int
	for p, o := range t.Owners {
		if o == id {
			out = append(out, p)
		}
	}
	return out
}
