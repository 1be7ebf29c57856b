package manager

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
)

// fill puts k keys on their owners per the current table.
func (e *env) fill(k int) map[string]uint64 {
	e.t.Helper()
	tbl := e.table()
	want := map[string]uint64{}
	for i := range k {
		key := fmt.Sprintf("img-%05d", i)
		owner, _, err := tbl.Owner(key)
		if err != nil {
			e.t.Fatal(err)
		}
		v := uint64(i%7 + 1)
		e.launcher.node(owner).put(contracts.Entry{Key: key, Version: v, ContentType: "image/png", Value: []byte(strings.Repeat("x", 100))})
		want[key] = v
	}
	return want
}

// placement returns, for every cached key, the nodes that hold it.
func (e *env) placement() map[string][]contracts.NodeID {
	out := map[string][]contracts.NodeID{}
	for _, id := range e.launcher.running() {
		for k := range e.launcher.node(id).keys() {
			out[k] = append(out[k], id)
		}
	}
	return out
}

// checkOnOwners fails unless every key of want sits exactly once, on its
// owner, with its version.
func (e *env) checkOnOwners(want map[string]uint64) {
	e.t.Helper()
	tbl := e.table()
	place := e.placement()
	for k, v := range want {
		owner, _, _ := tbl.Owner(k)
		if len(place[k]) != 1 || place[k][0] != owner {
			e.t.Fatalf("key %s is on %v, want only on its owner %s", k, place[k], owner)
		}
		if got := e.launcher.node(owner).keys()[k]; got != v {
			e.t.Fatalf("key %s has version %d on %s, want %d", k, got, owner, v)
		}
	}
}

func TestWarmMigrationGrowAndShrink(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Partitions = 256; c.InitialNodes = 4; c.MaxNodes = 8 })
	tables := collect[contracts.PartitionTable](t, e.client, contracts.EvtTable)
	progress := collect[contracts.MigrationProgress](t, e.client, contracts.EvtMigration)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(4))

	const K = 5000
	want := e.fill(K)
	before := e.placement()

	rec := e.resize(contracts.ResizeRequest{Change: "increase"})
	if rec.Status != contracts.StateApplied || rec.FromSize != 4 || rec.ToSize != 5 {
		t.Fatalf("grow: %+v", rec)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(5))
	e.checkOnOwners(want)
	after := e.placement()
	moved, toNew := 0, 0
	newNode := e.table().Nodes[4]
	for k := range want {
		if before[k][0] != after[k][0] {
			moved++
			if after[k][0] == newNode {
				toNew++
			}
		}
	}
	if limit := 1.1 * K / 5; float64(moved) > limit {
		t.Errorf("4→5 moved %d keys, limit %.0f", moved, limit)
	}
	if floor := 0.8 * K / 5; float64(toNew) < floor {
		t.Errorf("the new node received %d keys, want ≥ %.0f", toNew, floor)
	}
	checkLoad(t, e.placement(), 5)

	// The move was announced with Previous, then finished without it.
	sawPrevious := false
	for _, tb := range tables.all() {
		if len(tb.Previous) > 0 && len(tb.Nodes) == 5 {
			sawPrevious = true
		}
	}
	if !sawPrevious {
		t.Error("no table with Previous was published during the 4→5 migration")
	}
	bustest.Eventually(t, 5*time.Second, func() error {
		for _, p := range progress.all() {
			if p.Done && p.MovedKeys == int64(moved) && p.TotalKeys == p.MovedKeys && p.MovedBytes == int64(moved)*int64(len("img-00000")+100) {
				return nil
			}
		}
		return fmt.Errorf("no final progress event with %d moved keys: %+v", moved, progress.all())
	})

	before = e.placement()
	rec = e.resize(contracts.ResizeRequest{Change: "decrease"})
	if rec.Status != contracts.StateApplied || rec.ToSize != 4 {
		t.Fatalf("shrink: %+v", rec)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(4))
	e.checkOnOwners(want)
	_, terminated := e.launcher.history()
	if len(terminated) != 1 {
		t.Fatalf("terminated %v, want one leaving node", terminated)
	}
	after = e.placement()
	for k := range want {
		if before[k][0] != after[k][0] && before[k][0] != terminated[0] {
			t.Fatalf("5→4 moved %s from staying node %s", k, before[k][0])
		}
	}
	checkLoad(t, after, 4)
}

// checkLoad fails when the most loaded node holds more than 1.1 × the mean.
func checkLoad(t *testing.T, place map[string][]contracts.NodeID, n int) {
	t.Helper()
	per := map[contracts.NodeID]int{}
	for _, nodes := range place {
		per[nodes[0]]++
	}
	mx := 0
	for _, c := range per {
		mx = max(mx, c)
	}
	mean := float64(len(place)) / float64(n)
	if r := float64(mx) / mean; r > 1.10 || math.IsNaN(r) {
		t.Errorf("max/mean load %.3f > 1.10 (%v)", r, per)
	}
}

func TestMigrationOffDropsMovedPartitions(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2; c.Migration = Bool(false) })
	tables := collect[contracts.PartitionTable](t, e.client, contracts.EvtTable)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	want := e.fill(500)
	before := e.table()

	e.resize(contracts.ResizeRequest{Change: "increase"})
	bustest.Eventually(t, 10*time.Second, e.settled(3))
	after := e.table()
	place := e.placement()
	kept := 0
	for k := range want {
		p := contracts.Partition(k, after.Partitions)
		moved := before.Owners[p] != after.Owners[p]
		switch {
		case moved && len(place[k]) != 0:
			t.Fatalf("key %s of a moved partition is still cached on %v", k, place[k])
		case !moved && (len(place[k]) != 1 || place[k][0] != after.Owners[p]):
			t.Fatalf("key %s of a kept partition is on %v", k, place[k])
		case !moved:
			kept++
		}
	}
	if kept == 0 || kept == len(want) {
		t.Fatalf("kept %d of %d keys; expected some partitions to move", kept, len(want))
	}
	for _, tb := range tables.all() {
		if len(tb.Previous) > 0 {
			t.Fatalf("epoch %d has Previous with migration off", tb.Epoch)
		}
	}
}

func TestLateWriteToTheFormerOwnerReachesTheNewOwner(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2 })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	want := e.fill(300)
	tbl := e.table()
	after := Rebalance(tbl.Owners, []contracts.NodeID{"node-1", "node-2", "node-3"})
	var key string
	for k := range want {
		p := contracts.Partition(k, tbl.Partitions)
		if tbl.Owners[p] == "node-1" && after[p] == "node-3" {
			key = k
			break
		}
	}
	if key == "" {
		t.Fatal("no key moves from node-1 to node-3")
	}
	src := e.launcher.node("node-1")
	calls := 0
	src.mu.Lock()
	src.onHandoff = func() {
		calls++ // handler runs on one subscription goroutine
		if calls == 2 {
			// A writer with the old table lands after the first pass.
			src.put(contracts.Entry{Key: key, Version: 100, Value: []byte("new")})
		}
	}
	src.mu.Unlock()
	e.resize(contracts.ResizeRequest{Change: "increase"})
	bustest.Eventually(t, 10*time.Second, e.settled(3))
	want[key] = 100
	e.checkOnOwners(want)
}
