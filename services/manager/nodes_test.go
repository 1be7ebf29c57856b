package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

func TestFailedNodeIsRemovedAndReplaced(t *testing.T) {
	const hb = 250 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.InitialNodes = 3; c.Heartbeat = hb })
	e.launcher.hb = hb
	nodeEvents := collect[contracts.NodeEvent](t, e.client, contracts.EvtNode)
	tables := collect[contracts.PartitionTable](t, e.client, contracts.EvtTable)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(3))
	e.fill(300)

	victim := e.launcher.node("node-2")
	victim.crash()
	bustest.Eventually(t, 20*time.Second, func() error {
		tbl := e.table()
		if slices.Contains(tbl.Nodes, "node-2") || slices.Contains(tbl.Owners, "node-2") {
			return fmt.Errorf("node-2 still in the table at epoch %d", tbl.Epoch)
		}
		return nil
	})
	bustest.Eventually(t, 20*time.Second, e.settled(3))
	tbl := e.table()
	if !slices.Contains(tbl.Nodes, "node-4") {
		t.Fatalf("table nodes %v, want node-4 as the replacement", tbl.Nodes)
	}
	// The failed node left in one step, with no handoff from it.
	for _, tb := range tables.all() {
		if slices.Contains(tb.Previous, "node-2") {
			t.Fatalf("epoch %d plans a handoff from the failed node", tb.Epoch)
		}
	}
	_, terminated := e.launcher.history()
	if !slices.Contains(terminated, "node-2") {
		t.Errorf("the failed node was not terminated: %v", terminated)
	}
	bustest.Eventually(t, 5*time.Second, func() error {
		for _, ev := range nodeEvents.all() {
			if ev.Node == "node-2" && ev.Kind == contracts.NodeFailedEvt {
				return nil
			}
		}
		return fmt.Errorf("no failed event for node-2")
	})
	if st := e.state(); st.Target != 3 {
		t.Fatalf("target %d, want 3", st.Target)
	}
}

func TestCleanStopOfATableNodeHeals(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2 })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	// Stopped behind the manager's back (the launcher still lists it).
	e.launcher.node("node-1").stopClean()
	e.launcher.mu.Lock()
	delete(e.launcher.nodes, "node-1")
	e.launcher.mu.Unlock()
	bustest.Eventually(t, 20*time.Second, func() error {
		if err := e.settled(2)(); err != nil {
			return err
		}
		if tbl := e.table(); slices.Contains(tbl.Nodes, "node-1") {
			return fmt.Errorf("node-1 still listed")
		}
		return nil
	})
}

func TestConfigPushReachesNodesAndLateJoiners(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2 })
	// When a table listing a node is evented, the node must already hold a
	// config (checked as the event arrives, reported at the end).
	var (
		mu         sync.Mutex
		violations []string
	)
	sub, err := e.client.Subscribe(contracts.EvtTable, func(m *nats.Msg) {
		var tb contracts.PartitionTable
		if json.Unmarshal(m.Data, &tb) != nil {
			return
		}
		for _, id := range tb.Nodes {
			if n := e.launcher.node(id); n != nil && len(n.configs()) == 0 {
				mu.Lock()
				violations = append(violations, fmt.Sprintf("epoch %d lists %s before it was configured", tb.Epoch, id))
				mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))

	cfg, err := call[contracts.CacheConfig](t, e.client, contracts.PoolSetCacheConfig, map[string]any{"capacity": 128, "policy": "rr"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CapacityMB != 128 || cfg.Policy != contracts.PolicyRandom {
		t.Fatalf("applied %+v, want 128 MB random", cfg)
	}
	for _, id := range []contracts.NodeID{"node-1", "node-2"} {
		got := e.launcher.node(id).configs()
		if len(got) == 0 || got[len(got)-1] != cfg {
			t.Fatalf("%s configs %v, want last %+v", id, got, cfg)
		}
	}
	got, err := call[contracts.CacheConfig](t, e.client, contracts.PoolGetCacheConfig, nil)
	if err != nil || got != cfg {
		t.Fatalf("stored config %+v %v", got, err)
	}

	e.resize(contracts.ResizeRequest{Change: "increase"})
	bustest.Eventually(t, 10*time.Second, e.settled(3))
	late := e.launcher.node("node-3").configs()
	if len(late) == 0 || late[0] != cfg {
		t.Fatalf("late joiner configs %v, want first %+v", late, cfg)
	}
	mu.Lock()
	if len(violations) > 0 {
		t.Error(strings.Join(violations, "\n"))
	}
	mu.Unlock()
	// The stored config survives a restart.
	e.stop()
	e.start()
	got, err = call[contracts.CacheConfig](t, e.client, contracts.PoolGetCacheConfig, nil)
	if err != nil || got != cfg {
		t.Fatalf("config after restart %+v %v", got, err)
	}
}

func TestStandbyNodesAreActivatedAndDeactivated(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Provisioner = ProvisionerStandby; c.Launcher = nil })
	var nodes []*fakeNode
	for i := range 3 {
		n, err := startFakeNode(e.launcher.nc, contracts.NodeID(fmt.Sprintf("sb-%d", i+1)), testHeartbeat, true)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		t.Cleanup(n.crash)
	}
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	status := func() contracts.PoolStatus {
		s, err := call[contracts.PoolStatus](t, e.client, contracts.PoolStatusSubject, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	count := func(s contracts.PoolStatus, state string) int {
		c := 0
		for _, n := range s.Nodes {
			if n.State == state {
				c++
			}
		}
		return c
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if s := status(); count(s, contracts.NodeActive) != 1 || count(s, contracts.NodeStandby) != 2 {
			return fmt.Errorf("nodes %+v", s.Nodes)
		}
		return nil
	})
	if rec := e.resize(contracts.ResizeRequest{Change: "increase"}); rec.Status != contracts.StateApplied {
		t.Fatalf("grow: %+v", rec)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(2))
	rec := e.resize(contracts.ResizeRequest{Target: 4})
	if rec.Status != contracts.StateRejected || !strings.Contains(rec.Reason, "standby") {
		t.Fatalf("growing past the idle standby nodes: %+v", rec)
	}
	active := e.table().Nodes
	if rec := e.resize(contracts.ResizeRequest{Change: "decrease"}); rec.Status != contracts.StateApplied {
		t.Fatalf("shrink: %+v", rec)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(1))
	left := removeIDs(active, e.table().Nodes...)
	if len(left) != 1 {
		t.Fatalf("left %v", left)
	}
	for _, n := range nodes {
		if n.id == left[0] {
			n.mu.Lock()
			clears := n.clears
			n.mu.Unlock()
			if clears < 2 { // once on activation, once on deactivation
				t.Fatalf("deactivated %s was cleared %d times", n.id, clears)
			}
		}
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if s := status(); count(s, contracts.NodeStandby) != 2 {
			return fmt.Errorf("nodes %+v", s.Nodes)
		}
		return nil
	})
}

func TestStatusClearCacheAndClearData(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2 })
	cleared := collect[contracts.Cleared](t, e.client, contracts.EvtCleared)
	// A stand-in key-image store answering clear_all.
	sub, err := e.client.Subscribe(contracts.StoreClearAll, func(m *nats.Msg) {
		respondJSON(m, contracts.ClearAllReply{Rows: 7, Objects: 7, CachedItems: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	want := e.fill(40)

	s, err := call[contracts.PoolStatus](t, e.client, contracts.PoolStatusSubject, nil)
	if err != nil {
		t.Fatal(err)
	}
	var items int64
	parts := 0
	for _, n := range s.Nodes {
		items += n.Items
		parts += n.Partitions
		if n.State != contracts.NodeActive {
			t.Fatalf("node %+v", n)
		}
	}
	if s.Size != 2 || items != int64(len(want)) || parts != s.Partitions || s.MaxNodes != 4 {
		t.Fatalf("status %+v: items %d partitions %d", s, items, parts)
	}

	r, err := call[contracts.ClearReply](t, e.client, contracts.PoolClearCache, nil)
	if err != nil || r.Items != int64(len(want)) || r.Nodes != 2 {
		t.Fatalf("clear cache %+v %v", r, err)
	}
	if len(e.placement()) != 0 {
		t.Fatal("keys left after clear")
	}
	d, err := call[contracts.ClearAllReply](t, e.client, contracts.PoolClearData, nil)
	if err != nil || d != (contracts.ClearAllReply{Rows: 7, Objects: 7, CachedItems: 3}) {
		t.Fatalf("clear data %+v %v", d, err)
	}
	bustest.Eventually(t, 5*time.Second, func() error {
		got := cleared.all()
		if len(got) != 2 || got[0].What != "cache" || got[0].CachedItems != int64(len(want)) || got[1].What != "data" || got[1].Rows != 7 {
			return fmt.Errorf("cleared events %+v", got)
		}
		return nil
	})
}

func TestManagerAppearsInMicroList(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := bus.RequestMsg(ctx, e.client, &nats.Msg{Subject: "$SRV.INFO." + contracts.ServiceManager})
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{contracts.PoolStatusSubject, contracts.PoolResize, contracts.PoolSetCacheConfig, contracts.PoolClearData, contracts.PoolRequests} {
		if !strings.Contains(string(reply.Data), `"`+subject+`"`) {
			t.Errorf("service info lacks %s: %s", subject, reply.Data)
		}
	}
}

func TestRestartReplacesNodesThatDiedWithTheManager(t *testing.T) {
	// A heartbeat of a minute: only the start-up probe can notice in time.
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2; c.Heartbeat = time.Minute })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	e.stop()
	for _, id := range e.launcher.running() {
		e.launcher.node(id).crash()
		e.launcher.mu.Lock()
		delete(e.launcher.nodes, id)
		e.launcher.mu.Unlock()
	}
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	if tbl := e.table(); !slices.Equal(tbl.Nodes, []contracts.NodeID{"node-3", "node-4"}) {
		t.Fatalf("nodes %v, want the replacements node-3 and node-4", tbl.Nodes)
	}
}

func TestHandoffFromAFailingNodeIsAbandoned(t *testing.T) {
	const hb = 250 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.InitialNodes = 2; c.Heartbeat = hb; c.HandoffTimeout = 5 * time.Minute })
	e.launcher.hb = hb
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	e.fill(200)
	stuck := e.launcher.node("node-1")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck.mu.Lock()
	stuck.onHandoff = func() {
		go stuck.crash()
		<-release
	}
	stuck.mu.Unlock()

	start := time.Now()
	rec := e.resize(contracts.ResizeRequest{Change: "increase"})
	if rec.Status != contracts.StateApplied {
		t.Fatalf("resize %+v", rec)
	}
	bustest.Eventually(t, 20*time.Second, e.settled(3))
	if tbl := e.table(); slices.Contains(tbl.Nodes, "node-1") {
		t.Fatalf("the crashed node is still listed: %v", tbl.Nodes)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("took %v: the handoff waited for its timeout", d)
	}
}

func TestStoredStateWinsButMaxNodesBoundsIt(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialNodes = 3 })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(3))
	e.stop()
	e.cfg.InitialNodes = 1 // the stored target (3) wins over the initial size
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(3))
	e.stop()
	e.cfg.MaxNodes = 2
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(2))
	if st := e.state(); st.Target != 2 {
		t.Fatalf("target %d, want 2", st.Target)
	}
}
