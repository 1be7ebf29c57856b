package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// poolRecord is what the manager stores under contracts.KeyState. Its JSON
// is a superset of contracts.PoolState, so anyone may decode it as that.
type poolRecord struct {
	contracts.PoolState
	// NextNode is the last number used for a launched node id (node-<n>);
	// ids are never reused.
	NextNode uint64 `json:"next_node"`
	// Launching lists nodes chosen to join (launched or being launched,
	// standby nodes being activated) that are not in the table yet.
	Launching []contracts.NodeID `json:"launching,omitempty"`
	// Leaving lists nodes chosen to leave that are not terminated or
	// deactivated yet (they drain first).
	Leaving []contracts.NodeID `json:"leaving,omitempty"`
	// Current is the resize command being applied, stored before any action
	// so that a restarted manager resumes it instead of deciding it again.
	Current *inflight `json:"inflight,omitempty"`
	// Last is the outcome of the command at LastApplied, so a redelivery
	// after a crash can finish its request record.
	Last *outcome `json:"last_outcome,omitempty"`
}

// inflight is a command whose decision is stored but whose work is not done.
type inflight struct {
	Seq        uint64                  `json:"seq"`
	AckSubject string                  `json:"ack_subject,omitempty"`
	Command    contracts.ResizeCommand `json:"command"`
	From       int                     `json:"from"`
	To         int                     `json:"to"`
}

// outcome is a command's terminal result.
type outcome struct {
	Seq       uint64 `json:"seq"`
	RequestID string `json:"request_id"`
	Status    string `json:"status"`
	Reason    string `json:"reason,omitempty"`
	From      int    `json:"from"`
	To        int    `json:"to"`
}

func removeIDs(list []contracts.NodeID, drop ...contracts.NodeID) []contracts.NodeID {
	return slices.DeleteFunc(slices.Clone(list), func(id contracts.NodeID) bool { return slices.Contains(drop, id) })
}

// errConflict is a lost compare-and-set race; the caller re-reads and retries.
var errConflict = errors.New("manager: concurrent update")

func isConflict(err error) bool {
	return bus.IsConflict(err) || errors.Is(err, errConflict)
}

// store reads and writes the manager's KV state. Every write is a
// compare-and-set on the key's revision, so concurrent writers (the actor
// and the API handlers) never lose each other's fields.
type store struct {
	pool     jetstream.KeyValue
	requests jetstream.KeyValue
}

// state returns the stored pool record and its revision.
func (s *store) state(ctx context.Context) (poolRecord, uint64, error) {
	var st poolRecord
	e, err := s.pool.Get(ctx, contracts.KeyState)
	if err != nil {
		return st, 0, fmt.Errorf("manager: read state: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, 0, fmt.Errorf("manager: stored state is not valid JSON: %w", err)
	}
	return st, e.Revision(), nil
}

// initState stores first if there is no state yet and returns the stored one.
func (s *store) initState(ctx context.Context, first poolRecord) (poolRecord, error) {
	b, err := json.Marshal(first)
	if err != nil {
		return first, err
	}
	if _, err := s.pool.Create(ctx, contracts.KeyState, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return first, fmt.Errorf("manager: create state: %w", err)
	}
	st, _, err := s.state(ctx)
	return st, err
}

// update applies fn to the latest state and stores it with a
// compare-and-set, retrying on conflicts. fn may run more than once and must
// only change the fields it owns. An error from fn aborts without writing.
func (s *store) update(ctx context.Context, fn func(*poolRecord) error) (poolRecord, error) {
	for attempt := 0; ; attempt++ {
		st, rev, err := s.state(ctx)
		if err != nil {
			return st, err
		}
		if err := fn(&st); err != nil {
			return st, err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return st, err
		}
		_, err = s.pool.Update(ctx, contracts.KeyState, b, rev)
		if err == nil {
			return st, nil
		}
		if !isConflict(err) || attempt >= 50 {
			return st, fmt.Errorf("manager: write state: %w", err)
		}
	}
}

// table returns the stored partition table and its revision.
func (s *store) table(ctx context.Context) (contracts.PartitionTable, uint64, error) {
	var t contracts.PartitionTable
	e, err := s.pool.Get(ctx, contracts.KeyTable)
	if err != nil {
		return t, 0, fmt.Errorf("manager: read table: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return t, 0, fmt.Errorf("manager: stored table is not valid JSON: %w", err)
	}
	return t, e.Revision(), nil
}

// initTable stores an empty table of p partitions if there is none and
// returns the stored one.
func (s *store) initTable(ctx context.Context, p int) (contracts.PartitionTable, error) {
	t := contracts.PartitionTable{Epoch: 1, Partitions: p, Owners: make([]contracts.NodeID, p), Nodes: []contracts.NodeID{}, UpdatedAt: time.Now().UTC()}
	b, err := json.Marshal(t)
	if err != nil {
		return t, err
	}
	if _, err := s.pool.Create(ctx, contracts.KeyTable, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return t, fmt.Errorf("manager: create table: %w", err)
	}
	t, _, err = s.table(ctx)
	return t, err
}

// putTable stores next as the successor of prev (epoch prev.Epoch+1) if the
// stored table is still at prev's revision.
func (s *store) putTable(ctx context.Context, prevRev uint64, prev, next contracts.PartitionTable) (contracts.PartitionTable, uint64, error) {
	next.Epoch = prev.Epoch + 1
	next.Partitions = prev.Partitions
	next.UpdatedAt = time.Now().UTC()
	if next.Nodes == nil {
		next.Nodes = []contracts.NodeID{}
	}
	if err := next.Validate(); err != nil {
		return prev, prevRev, fmt.Errorf("manager: refusing to store an invalid table: %w", err)
	}
	b, err := json.Marshal(next)
	if err != nil {
		return prev, prevRev, err
	}
	rev, err := s.pool.Update(ctx, contracts.KeyTable, b, prevRev)
	if err != nil {
		if isConflict(err) {
			return prev, prevRev, fmt.Errorf("manager: the table changed under us (another manager?): %w", errConflict)
		}
		return prev, prevRev, fmt.Errorf("manager: write table: %w", err)
	}
	return next, rev, nil
}
