package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Node request timeouts.
const (
	pingTimeout      = 300 * time.Millisecond
	configureTimeout = 5 * time.Second
	dropTimeout      = 30 * time.Second
	terminateTimeout = 30 * time.Second
)

// reconcile moves the pool one stored step at a time towards its stored
// target, until nothing is left to do:
//
//  1. table nodes that failed leave the table at once (no handoff);
//  2. a migration in progress (Previous set) is finished;
//  3. leftovers are cleaned: drained leaving nodes are terminated or
//     deactivated, launched nodes no longer needed are terminated;
//  4. too few nodes: nodes are launched or activated, configured, and added;
//  5. too many: the least loaded (newest on ties) leave after draining.
//
// Every step stores its outcome (state or table) before the next one, so a
// manager that stops at any point resumes from the stored state. Only the
// actor calls it. A provisioning failure stops growing but the other steps
// still run; it is then returned.
func (m *manager) reconcile(ctx context.Context, requestID string) error {
	var provErr error
	for range 64 {
		st, _, err := m.st.state(ctx)
		if err != nil {
			return err
		}
		tbl, rev, err := m.st.table(ctx)
		if err != nil {
			return err
		}
		if requestID == "" && st.Current != nil {
			requestID = st.Current.Command.RequestID // resuming its work before its redelivery
		}
		if failed := m.reg.failed(tbl.Nodes); len(failed) > 0 {
			if err := m.removeFailed(ctx, tbl, rev, failed); err != nil {
				return err
			}
			continue
		}
		if len(tbl.Previous) > 0 {
			if err := m.finishMigration(ctx, tbl, rev, requestID); err != nil {
				return err
			}
			continue
		}
		did, err := m.cleanup(ctx, st, tbl)
		if err != nil {
			return err
		}
		if did {
			continue
		}
		switch active := len(tbl.Nodes); {
		case active < st.Target && provErr == nil:
			err := m.grow(ctx, st, tbl, rev, st.Target-active)
			if isProvision(err) {
				provErr = err
				continue
			}
			if err != nil {
				return err
			}
			continue
		case active > st.Target:
			if err := m.shrink(ctx, st, tbl, rev, active-st.Target); err != nil {
				return err
			}
			continue
		}
		return provErr
	}
	return errors.New("manager: the pool did not settle within 64 steps")
}

// busy lists every node the pool is using or about to use or release.
func (m *manager) busy(st poolRecord, tbl contracts.PartitionTable) []contracts.NodeID {
	out := slices.Clone(tbl.Nodes)
	for _, p := range tbl.Previous {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, id := range slices.Concat(st.Launching, st.Leaving) {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// transition builds the table that follows tbl with owners and nodes: with
// migration on, Previous names the former owner of every moving partition.
func (m *manager) transition(tbl contracts.PartitionTable, owners, nodes []contracts.NodeID) contracts.PartitionTable {
	next := contracts.PartitionTable{Partitions: tbl.Partitions, Owners: owners, Nodes: nodes}
	if !m.cfg.migrate() {
		return next
	}
	prev := make([]contracts.NodeID, len(owners))
	moving := false
	for p, o := range tbl.Owners {
		if o != "" && o != owners[p] {
			prev[p] = o
			moving = true
		}
	}
	if moving {
		next.Previous = prev
	}
	return next
}

// storeTable writes next after tbl and events it.
func (m *manager) storeTable(ctx context.Context, tbl contracts.PartitionTable, rev uint64, next contracts.PartitionTable) (contracts.PartitionTable, error) {
	stored, _, err := m.st.putTable(ctx, rev, tbl, next)
	if err != nil {
		return tbl, err
	}
	m.publish(contracts.EvtTable, stored)
	return stored, nil
}

// removeFailed takes failed nodes out of the table in one step: their
// partitions go to the least loaded remaining nodes without a handoff (their
// keys are misses served from the store meanwhile). The nodes are then
// terminated, best effort, and the next steps replace them.
func (m *manager) removeFailed(ctx context.Context, tbl contracts.PartitionTable, rev uint64, failed []contracts.NodeID) error {
	remaining := removeIDs(tbl.Nodes, failed...)
	owners := slices.Clone(tbl.Owners)
	for p, o := range owners {
		if slices.Contains(failed, o) {
			owners[p] = ""
		}
	}
	newOwners := Rebalance(owners, remaining)
	next := contracts.PartitionTable{Partitions: tbl.Partitions, Owners: newOwners, Nodes: remaining}
	if m.cfg.migrate() {
		prev := make([]contracts.NodeID, len(newOwners))
		moving := false
		for p := range prev {
			from := tbl.Owners[p]
			if len(tbl.Previous) == len(prev) && tbl.Previous[p] != "" {
				from = tbl.Previous[p] // its data has not finished moving
			}
			if from != "" && !slices.Contains(failed, from) && from != newOwners[p] {
				prev[p] = from
				moving = true
			}
		}
		if moving {
			next.Previous = prev
		}
	}
	if _, err := m.storeTable(ctx, tbl, rev, next); err != nil {
		return err
	}
	for _, id := range failed {
		m.log.Warn("node failed, removed from the table", "node", id, "last_seen", m.reg.lastSeenAt(id))
		m.nodeEvent(id, contracts.NodeFailedEvt, "silent for 3 heartbeats or stopped; partitions reassigned without handoff")
		m.reg.forget(id)
		m.terminateAsync(id)
	}
	if !m.cfg.migrate() {
		m.dropMoved(ctx, tbl.Owners, newOwners, failed)
	}
	_, err := m.st.update(ctx, func(s *poolRecord) error {
		s.Launching = removeIDs(s.Launching, failed...)
		s.Leaving = removeIDs(s.Leaving, failed...)
		return nil
	})
	return err
}

// cleanup terminates or deactivates leaving nodes that no longer hold
// partitions, and launched nodes that are no longer needed, then forgets
// them. It reports whether it changed anything.
func (m *manager) cleanup(ctx context.Context, st poolRecord, tbl contracts.PartitionTable) (bool, error) {
	var doneLeaving, doneLaunching []contracts.NodeID
	for _, id := range st.Leaving {
		switch {
		case !slices.Contains(tbl.Nodes, id):
			m.deactivate(ctx, id)
			doneLeaving = append(doneLeaving, id)
		case len(tbl.Nodes) <= st.Target:
			doneLeaving = append(doneLeaving, id) // stays: the pool needs it again
		}
	}
	for _, id := range st.Launching {
		switch {
		case slices.Contains(tbl.Nodes, id):
			doneLaunching = append(doneLaunching, id)
		case len(tbl.Nodes) >= st.Target:
			m.deactivate(ctx, id)
			doneLaunching = append(doneLaunching, id)
		}
	}
	if len(doneLeaving)+len(doneLaunching) == 0 {
		return false, nil
	}
	_, err := m.st.update(ctx, func(s *poolRecord) error {
		s.Leaving = removeIDs(s.Leaving, doneLeaving...)
		s.Launching = removeIDs(s.Launching, doneLaunching...)
		return nil
	})
	return true, err
}

// deactivate stops a node that left the pool: a standby node is cleared and
// returns to idle, a launched node is terminated.
func (m *manager) deactivate(ctx context.Context, id contracts.NodeID) {
	if m.cfg.Provisioner == ProvisionerStandby {
		if _, err := nodeRequest[contracts.ClearReply](ctx, m.nc, contracts.NodeClear(id), nil, configureTimeout); err != nil {
			m.log.Warn("clear a deactivated standby node", "node", id, "err", err)
		}
		m.nodeEvent(id, contracts.NodeLeft, "deactivated, back to standby")
		return
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), terminateTimeout)
	defer cancel()
	if err := m.cfg.Launcher.Terminate(tctx, id); err != nil {
		m.log.Warn("terminate node", "node", id, "err", err)
	}
	m.reg.forget(id)
	m.nodeEvent(id, contracts.NodeLeft, "terminated")
}

// terminateAsync terminates a failed node in the background (best effort).
func (m *manager) terminateAsync(id contracts.NodeID) {
	if m.cfg.Provisioner == ProvisionerStandby {
		return
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), terminateTimeout)
		defer cancel()
		if err := m.cfg.Launcher.Terminate(ctx, id); err != nil {
			m.log.Warn("terminate failed node", "node", id, "err", err)
		}
	}()
}

// grow brings k more nodes in: launched ones (reusing ids chosen before a
// restart) or idle standby ones, each ready and configured with the current
// cache config before it is added to the table.
func (m *manager) grow(ctx context.Context, st poolRecord, tbl contracts.PartitionTable, rev uint64, k int) error {
	var ids []contracts.NodeID
	for _, id := range st.Launching {
		if len(ids) < k && !slices.Contains(tbl.Nodes, id) {
			ids = append(ids, id)
		}
	}
	if m.cfg.Provisioner == ProvisionerStandby {
		for _, id := range m.reg.idleStandby(m.busy(st, tbl)) {
			if len(ids) < k {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return provisionErrorf("no idle standby node to activate (%d needed)", k)
		}
	}
	reused := ids
	var err error
	st, err = m.st.update(ctx, func(s *poolRecord) error { // may run more than once
		chosen := slices.Clone(reused)
		for _, id := range chosen {
			if !slices.Contains(s.Launching, id) {
				s.Launching = append(s.Launching, id)
			}
		}
		if m.cfg.Provisioner != ProvisionerStandby {
			for len(chosen) < k {
				s.NextNode++
				id := contracts.NodeID(fmt.Sprintf("node-%d", s.NextNode))
				chosen = append(chosen, id)
				s.Launching = append(s.Launching, id)
			}
		}
		ids = chosen
		return nil
	})
	if err != nil {
		return err
	}

	ready, errs := m.startNodes(ctx, ids, st.Config)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(ready) > 0 {
		if err := m.join(ctx, tbl, rev, &ready, &errs); err != nil {
			return err
		}
	}
	var lost []contracts.NodeID
	for _, id := range ids {
		if !slices.Contains(ready, id) {
			lost = append(lost, id)
			if m.cfg.Provisioner != ProvisionerStandby {
				m.terminateAsync(id)
			}
		}
	}
	if _, err := m.st.update(ctx, func(s *poolRecord) error {
		s.Launching = removeIDs(s.Launching, slices.Concat(ready, lost)...)
		return nil
	}); err != nil {
		return err
	}
	if len(errs) > 0 {
		return provisionErrorf("%d of %d nodes could not join: %v", len(lost), len(ids), errors.Join(errs...))
	}
	return nil
}

// join configures ready nodes with the current cache config and adds them to
// the table, both under cfgMu. Nodes that cannot be configured are dropped
// from ready with an error in errs.
func (m *manager) join(ctx context.Context, tbl contracts.PartitionTable, rev uint64, ready *[]contracts.NodeID, errs *[]error) error {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	st, _, err := m.st.state(ctx)
	if err != nil {
		return err
	}
	var ok []contracts.NodeID
	for id, err := range m.configure(ctx, *ready, st.Config) {
		if slices.Contains(tbl.Nodes, id) {
			continue // already a member (cannot happen; never list a node twice)
		}
		if err != nil {
			*errs = append(*errs, fmt.Errorf("configure %s: %w", id, err))
			continue
		}
		ok = append(ok, id)
	}
	slices.SortFunc(ok, compareIDs)
	*ready = ok
	if len(ok) == 0 {
		return nil
	}
	nodes := slices.Concat(tbl.Nodes, ok)
	next := m.transition(tbl, Rebalance(tbl.Owners, nodes), nodes)
	if _, err := m.storeTable(ctx, tbl, rev, next); err != nil {
		return err
	}
	m.reg.touch(ok...)
	for _, id := range ok {
		m.nodeEvent(id, contracts.NodeJoined, fmt.Sprintf("joined the table at epoch %d", tbl.Epoch+1))
	}
	if !m.cfg.migrate() {
		m.dropMoved(ctx, tbl.Owners, next.Owners, nil)
	}
	return nil
}

// startNodes makes ids ready concurrently: a standby node is cleared; a
// launched id that already answers is reused, any other is launched, and
// then awaited until it announces readiness or answers a stats request.
func (m *manager) startNodes(ctx context.Context, ids []contracts.NodeID, cache contracts.CacheConfig) ([]contracts.NodeID, []error) {
	var (
		mu    sync.Mutex
		ready []contracts.NodeID
		errs  []error
		wg    sync.WaitGroup
	)
	for _, id := range ids {
		wg.Go(func() {
			err := m.startNode(ctx, id, cache)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				return
			}
			ready = append(ready, id)
		})
	}
	wg.Wait()
	slices.SortFunc(ready, compareIDs)
	return ready, errs
}

func (m *manager) startNode(ctx context.Context, id contracts.NodeID, cache contracts.CacheConfig) error {
	if m.cfg.Provisioner == ProvisionerStandby {
		if _, err := nodeRequest[contracts.ClearReply](ctx, m.nc, contracts.NodeClear(id), nil, configureTimeout); err != nil {
			return fmt.Errorf("standby node does not answer: %w", err)
		}
		m.nodeEvent(id, contracts.NodeReady, "standby node activated")
		return nil
	}
	announced := m.reg.expect(id)
	if m.ping(ctx, id) == nil {
		m.nodeEvent(id, contracts.NodeReady, "already running")
		return nil
	}
	if err := m.cfg.Launcher.Launch(ctx, id, cache); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	deadline := time.NewTimer(m.cfg.StartTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-announced:
			m.nodeEvent(id, contracts.NodeReady, "announced readiness")
			return nil
		case <-poll.C:
			if m.ping(ctx, id) == nil {
				m.nodeEvent(id, contracts.NodeReady, "answers stats requests")
				return nil
			}
		case <-deadline.C:
			return fmt.Errorf("not ready within %v", m.cfg.StartTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ping asks a node for its stats with a short timeout.
func (m *manager) ping(ctx context.Context, id contracts.NodeID) error {
	_, err := nodeRequest[contracts.NodeStats](ctx, m.nc, contracts.NodeStatsSubject(id), nil, pingTimeout)
	return err
}

// configure pushes cache to ids concurrently and yields each id's error.
func (m *manager) configure(ctx context.Context, ids []contracts.NodeID, cache contracts.CacheConfig) map[contracts.NodeID]error {
	var mu sync.Mutex
	out := make(map[contracts.NodeID]error, len(ids))
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			_, err := nodeRequest[contracts.NodeStats](ctx, m.nc, contracts.NodeConfigure(id), cache, configureTimeout)
			mu.Lock()
			out[id] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// shrink chooses k leaving nodes (the least loaded, newest on ties), stores
// the choice, and writes the table without them; their partitions move to
// the least loaded remaining nodes, and they drain in finishMigration before
// cleanup stops them.
func (m *manager) shrink(ctx context.Context, st poolRecord, tbl contracts.PartitionTable, rev uint64, k int) error {
	var leaving []contracts.NodeID
	for _, id := range st.Leaving {
		if len(leaving) < k && slices.Contains(tbl.Nodes, id) {
			leaving = append(leaving, id)
		}
	}
	if len(leaving) < k {
		load := Load(tbl.Owners)
		cands := removeIDs(tbl.Nodes, leaving...)
		pos := func(id contracts.NodeID) int { return slices.Index(tbl.Nodes, id) }
		slices.SortStableFunc(cands, func(a, b contracts.NodeID) int {
			if load[a] != load[b] {
				return load[a] - load[b]
			}
			return pos(b) - pos(a)
		})
		leaving = append(leaving, cands[:k-len(leaving)]...)
	}
	if _, err := m.st.update(ctx, func(s *poolRecord) error {
		for _, id := range leaving {
			if !slices.Contains(s.Leaving, id) {
				s.Leaving = append(s.Leaving, id)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	remaining := removeIDs(tbl.Nodes, leaving...)
	next := m.transition(tbl, Rebalance(tbl.Owners, remaining), remaining)
	if _, err := m.storeTable(ctx, tbl, rev, next); err != nil {
		return err
	}
	for _, id := range leaving {
		m.log.Info("node leaving the pool", "node", id, "drain", m.cfg.migrate())
	}
	return nil
}

// dropMoved asks each live former owner to delete the partitions it lost
// (best effort; used when moves happen without a handoff).
func (m *manager) dropMoved(ctx context.Context, before, after []contracts.NodeID, skip []contracts.NodeID) {
	lost := map[contracts.NodeID][]int{}
	for p, o := range before {
		if o != "" && o != after[p] && !slices.Contains(skip, o) && slices.Contains(after, o) {
			lost[o] = append(lost[o], p)
		}
	}
	var wg sync.WaitGroup
	for id, parts := range lost {
		wg.Go(func() {
			req := contracts.DropRequest{Partitions: parts, PartitionCount: len(before)}
			if _, err := nodeRequest[contracts.DropReply](ctx, m.nc, contracts.NodeDrop(id), req, dropTimeout); err != nil {
				m.log.Warn("drop moved partitions", "node", id, "partitions", len(parts), "err", err)
			}
		})
	}
	wg.Wait()
}

// nodeEvent events a node's change on contracts.EvtNode.
func (m *manager) nodeEvent(id contracts.NodeID, kind, detail string) {
	m.publish(contracts.EvtNode, contracts.NodeEvent{EventID: newID(), OccurredAt: time.Now().UTC(), Node: id, Kind: kind, Detail: detail})
}

// compareIDs orders node ids naturally: node-2 before node-10.
func compareIDs(a, b contracts.NodeID) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}
