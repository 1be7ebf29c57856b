package contracts

import (
	"errors"
	"fmt"
	"time"
)

// Eviction policies.
const (
	PolicyLRU    = "lru"
	PolicyRandom = "random"
)

// MaxCapacityMB is the largest cache capacity one node accepts (64 GiB).
const MaxCapacityMB = 64 * 1024

// Defaults of a cache node's configuration.
const (
	DefaultCapacityMB = 64
	DefaultPolicy     = PolicyLRU
)

// NormalizePolicy maps accepted spellings to a policy name: "lru" and
// "random" (alias "rr", random replacement). It returns "" for anything else.
func NormalizePolicy(p string) string {
	switch p {
	case "lru", "LRU", "least-recently-used":
		return PolicyLRU
	case "random", "RANDOM", "rr", "RR", "random-replacement":
		return PolicyRandom
	}
	return ""
}

// CacheConfig is one node's (and the pool's) cache configuration.
type CacheConfig struct {
	CapacityMB float64 `json:"capacity"`
	Policy     string  `json:"replacement_policy"`
}

// Validate checks the capacity range and the policy name.
func (c CacheConfig) Validate() error {
	var errs []error
	if !(c.CapacityMB > 0) || c.CapacityMB > MaxCapacityMB {
		errs = append(errs, fmt.Errorf("capacity must be a positive number of MB up to %d, got %v", MaxCapacityMB, c.CapacityMB))
	}
	if NormalizePolicy(c.Policy) == "" {
		errs = append(errs, fmt.Errorf("replacement_policy must be %q or %q, got %q", PolicyLRU, PolicyRandom, c.Policy))
	}
	return errors.Join(errs...)
}

// CapacityBytes is the capacity in bytes (1 MB = 1 MiB).
func (c CacheConfig) CapacityBytes() int64 { return int64(c.CapacityMB * 1024 * 1024) }

// PutReply answers a node put.
type PutReply struct {
	// Stored is false when the node kept a newer version or the item is larger than the capacity.
	Stored  bool   `json:"stored"`
	Version uint64 `json:"version"` // the version the node holds after the put (0: none)
	Reason  string `json:"reason,omitempty"`
}

// PutBatchReply answers a node put_batch.
type PutBatchReply struct {
	Stored  int `json:"stored"`
	Skipped int `json:"skipped"` // kept a newer version, or too large
}

// InvalidateRequest removes keys from a node. A key is removed only when the
// node's version is at most BelowOrAt (0 removes whatever version is held).
type InvalidateRequest struct {
	Keys      []string `json:"keys"`
	BelowOrAt uint64   `json:"below_or_at,omitempty"`
}

// Validate requires at least one key.
func (r InvalidateRequest) Validate() error {
	if len(r.Keys) == 0 {
		return errors.New("keys is empty")
	}
	return nil
}

// InvalidateReply answers an invalidate.
type InvalidateReply struct {
	Removed int `json:"removed"`
}

// ClearReply answers a clear (of a node, or summed over the pool).
type ClearReply struct {
	Items int64 `json:"items"`
	Bytes int64 `json:"bytes"`
	Nodes int   `json:"nodes,omitempty"`
}

// Counters are a node's cumulative counters since it started.
type Counters struct {
	Gets      uint64 `json:"gets"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Puts      uint64 `json:"puts"`
	Evictions uint64 `json:"evictions"`
}

// NodeStats is a node's live view.
type NodeStats struct {
	Node      NodeID      `json:"node"`
	Config    CacheConfig `json:"config"`
	Counters  Counters    `json:"counters"`
	Items     int64       `json:"items"`
	Bytes     int64       `json:"bytes"`
	StartedAt time.Time   `json:"started_at"`
}

// NodeReport is a node's per-interval report: the counter deltas since its
// previous report plus its current items and bytes. Seq starts at 1 for each
// incarnation (identified by Incarnation); the stats service counts each
// (node, incarnation, seq) once.
type NodeReport struct {
	EventID     string    `json:"event_id"`
	OccurredAt  time.Time `json:"occurred_at"`
	Node        NodeID    `json:"node"`
	Incarnation string    `json:"incarnation"`
	Seq         uint64    `json:"seq"`
	IntervalMS  int64     `json:"interval_ms"`
	Delta       Counters  `json:"delta"`
	Items       int64     `json:"items"`
	Bytes       int64     `json:"bytes"`
}

// Validate checks the identifying fields.
func (r NodeReport) Validate() error {
	var errs []error
	if err := r.Node.Valid(); err != nil {
		errs = append(errs, err)
	}
	if r.Incarnation == "" {
		errs = append(errs, errors.New("incarnation is empty"))
	}
	if r.Seq == 0 {
		errs = append(errs, errors.New("seq must start at 1"))
	}
	if r.OccurredAt.IsZero() {
		errs = append(errs, errors.New("occurred_at is missing"))
	}
	return errors.Join(errs...)
}

// Heartbeat is published by every node at the heartbeat interval.
type Heartbeat struct {
	Node        NodeID    `json:"node"`
	Incarnation string    `json:"incarnation"`
	OccurredAt  time.Time `json:"occurred_at"`
	Items       int64     `json:"items"`
	Bytes       int64     `json:"bytes"`
}

// NodeAnnouncement is published when a node is ready (and when it stops).
type NodeAnnouncement struct {
	EventID     string    `json:"event_id"`
	OccurredAt  time.Time `json:"occurred_at"`
	Node        NodeID    `json:"node"`
	Incarnation string    `json:"incarnation"`
	// Standby is true for nodes started by an operator that wait for the
	// manager to activate them.
	Standby bool `json:"standby,omitempty"`
}

// HandoffRequest asks a node to send its entries of Partitions to Target.
type HandoffRequest struct {
	RequestID  string `json:"request_id"`
	Target     NodeID `json:"target"`
	Partitions []int  `json:"partitions"`
	// PartitionCount is the table's P, so the node computes partitions the same way.
	PartitionCount int `json:"partition_count"`
	// BatchBytes bounds one batch (default 1 MiB, always at least one entry).
	BatchBytes int `json:"batch_bytes,omitempty"`
	// Delete removes the sent entries from the sender once acknowledged.
	Delete bool `json:"delete,omitempty"`
}

// Validate checks the target and partitions.
func (r HandoffRequest) Validate() error {
	var errs []error
	if err := r.Target.Valid(); err != nil {
		errs = append(errs, fmt.Errorf("target: %w", err))
	}
	if err := ValidatePartitions(r.PartitionCount); err != nil {
		errs = append(errs, err)
	}
	for _, p := range r.Partitions {
		if p < 0 || p >= r.PartitionCount {
			errs = append(errs, fmt.Errorf("partition %d out of range", p))
			break
		}
	}
	return errors.Join(errs...)
}

// HandoffReply reports what a handoff sent.
type HandoffReply struct {
	Keys    int   `json:"keys"`
	Bytes   int64 `json:"bytes"`
	Stored  int   `json:"stored"`
	Skipped int   `json:"skipped"`
	Batches int   `json:"batches"`
}

// DropRequest asks a node to delete its entries of Partitions.
type DropRequest struct {
	Partitions     []int `json:"partitions"`
	PartitionCount int   `json:"partition_count"`
}

// DropReply reports what was dropped.
type DropReply struct {
	Items int64 `json:"items"`
	Bytes int64 `json:"bytes"`
}
