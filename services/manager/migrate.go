package manager

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nuid"
)

// statsTimeout bounds the stats requests made for a status or a migration estimate.
const statsTimeout = 500 * time.Millisecond

func newID() string { return nuid.Next() }

// finishMigration completes the move that tbl describes: every former owner
// named in Previous hands its entries of the moving partitions to their new
// owner (acknowledged batches, node to node; the newer version always
// wins), in parallel per former owner; progress is evented after each
// finished handoff; then the table is stored without Previous. A handoff
// that fails loses only cache entries (misses served from the store); its
// source is asked to drop them so no stale copy stays behind. Calling it
// again after a crash repeats the handoffs, which is harmless.
func (m *manager) finishMigration(ctx context.Context, tbl contracts.PartitionTable, rev uint64, requestID string) error {
	if requestID == "" {
		requestID = fmt.Sprintf("heal-epoch-%d", tbl.Epoch)
	}
	// source -> target -> partitions
	moves := map[contracts.NodeID]map[contracts.NodeID][]int{}
	moving := 0
	for p, from := range tbl.Previous {
		to := tbl.Owners[p]
		if from == "" || to == "" || from == to {
			continue
		}
		if moves[from] == nil {
			moves[from] = map[contracts.NodeID][]int{}
		}
		moves[from][to] = append(moves[from][to], p)
		moving++
	}

	progress := contracts.MigrationProgress{RequestID: requestID, Epoch: tbl.Epoch, Partitions: moving}
	progress.TotalKeys, progress.TotalBytes = m.estimate(ctx, tbl, moves)
	var mu sync.Mutex
	emit := func() {
		progress.EventID = newID()
		progress.OccurredAt = time.Now().UTC()
		p := progress
		m.migration.Store(&p)
		m.publish(contracts.EvtMigration, p)
	}
	emit()
	failures := 0

	var wg sync.WaitGroup
	for from, targets := range moves {
		wg.Go(func() {
			tos := make([]contracts.NodeID, 0, len(targets))
			for to := range targets {
				tos = append(tos, to)
			}
			slices.SortFunc(tos, compareIDs)
			for _, to := range tos {
				parts := targets[to]
				reply, err := m.handoff(ctx, requestID, from, to, parts, tbl.Partitions)
				if err != nil && ctx.Err() == nil {
					m.log.Warn("handoff failed; its keys become misses", "from", from, "to", to, "partitions", len(parts), "err", err)
					drop := contracts.DropRequest{Partitions: parts, PartitionCount: tbl.Partitions}
					_, _ = nodeRequest[contracts.DropReply](ctx, m.nc, contracts.NodeDrop(from), drop, dropTimeout)
				}
				mu.Lock()
				if err != nil {
					failures++
				} else {
					progress.MovedKeys += int64(reply.Keys)
					progress.MovedBytes += reply.Bytes
					progress.TotalKeys = max(progress.TotalKeys, progress.MovedKeys)
					progress.TotalBytes = max(progress.TotalBytes, progress.MovedBytes)
				}
				emit()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	next := contracts.PartitionTable{Partitions: tbl.Partitions, Owners: tbl.Owners, Nodes: tbl.Nodes}
	if _, err := m.storeTable(ctx, tbl, rev, next); err != nil {
		return err
	}
	// Former owners still in the pool forget what they handed over, including
	// anything a late writer put there after the catch-up pass.
	former := slices.Clone(tbl.Owners)
	for p, from := range tbl.Previous {
		if from != "" {
			former[p] = from
		}
	}
	m.dropMoved(ctx, former, tbl.Owners, nil)
	progress.Done = true
	if failures == 0 {
		progress.TotalKeys, progress.TotalBytes = progress.MovedKeys, progress.MovedBytes
	}
	emit()
	m.migration.Store(nil)
	m.log.Info("migration done", "request_id", requestID, "partitions", moving, "keys", progress.MovedKeys, "bytes", progress.MovedBytes, "failed_handoffs", failures)
	return nil
}

// estimate guesses the keys and bytes about to move from each source's
// stats, in proportion to the share of its partitions that moves.
func (m *manager) estimate(ctx context.Context, tbl contracts.PartitionTable, moves map[contracts.NodeID]map[contracts.NodeID][]int) (keys, bytes int64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for from, targets := range moves {
		wg.Go(func() {
			stats, err := nodeRequest[contracts.NodeStats](ctx, m.nc, contracts.NodeStatsSubject(from), nil, statsTimeout)
			if err != nil {
				return
			}
			held, moving := 0, 0
			for p := range tbl.Owners {
				if tbl.Owners[p] == from || tbl.Previous[p] == from {
					held++
				}
			}
			for _, parts := range targets {
				moving += len(parts)
			}
			if held == 0 {
				return
			}
			mu.Lock()
			keys += stats.Items * int64(moving) / int64(held)
			bytes += stats.Bytes * int64(moving) / int64(held)
			mu.Unlock()
		})
	}
	wg.Wait()
	return keys, bytes
}

// handoff asks from to send its entries of parts to to, in two passes: the
// second picks up entries written to from by a writer that had not yet seen
// the table naming to as the owner (usually none). It is abandoned as soon
// as either node fails, instead of waiting for the handoff timeout.
func (m *manager) handoff(ctx context.Context, requestID string, from, to contracts.NodeID, parts []int, p int) (contracts.HandoffReply, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(max(m.cfg.Heartbeat/2, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if failed := m.reg.failed([]contracts.NodeID{from, to}); len(failed) > 0 {
					cancel(fmt.Errorf("node %s failed during the handoff", failed[0]))
					return
				}
			}
		}
	}()
	var total contracts.HandoffReply
	for range 2 {
		req := contracts.HandoffRequest{RequestID: requestID, Target: to, Partitions: parts, PartitionCount: p, Delete: true}
		r, err := nodeRequest[contracts.HandoffReply](ctx, m.nc, contracts.NodeHandoff(from), req, m.cfg.HandoffTimeout)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
				err = cause
			}
			return total, err
		}
		total.Keys += r.Keys
		total.Bytes += r.Bytes
		total.Stored += r.Stored
		total.Skipped += r.Skipped
		total.Batches += r.Batches
	}
	return total, nil
}
