package scaler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

const (
	testTick   = 40 * time.Millisecond
	testBucket = 200 * time.Millisecond
)

// fakePool answers as the manager and the stats service would: mode,
// status and request lookups, and the miss rate of the last complete bucket
// (buckets of testBucket on the real clock).
type fakePool struct {
	mu       sync.Mutex
	mode     contracts.ModeConfig
	size     int
	pending  int
	miss     *float64
	requests map[string]contracts.ResizeRequestState
}

func newFakePool(t *testing.T, nc *nats.Conn, size int, miss *float64) *fakePool {
	t.Helper()
	p := &fakePool{
		mode:     contracts.ModeConfig{Mode: contracts.ModeAutomatic, Params: contracts.DefaultAutoParams},
		size:     size,
		miss:     miss,
		requests: map[string]contracts.ResizeRequestState{},
	}
	ctx := context.Background()
	svc, err := micro.AddService(nc, micro.Config{Name: "fake-manager-and-stats", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = errorsJoin(
		svc.AddEndpoint("mode", bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.ModeConfig, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.mode, nil
		}), micro.WithEndpointSubject(contracts.PoolMode)),
		svc.AddEndpoint("status", bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.PoolStatus, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			return contracts.PoolStatus{Size: p.size, Target: p.size, MaxNodes: 8, Mode: p.mode, Pending: p.pending}, nil
		}), micro.WithEndpointSubject(contracts.PoolStatusSubject)),
		svc.AddEndpoint("request", bus.JSON(ctx, 0, func(_ context.Context, req contracts.RequestLookup) (contracts.ResizeRequestState, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			st, ok := p.requests[req.RequestID]
			if !ok {
				return st, contracts.Errorf(contracts.CodeNotFound, "no request %s", req.RequestID)
			}
			return st, nil
		}), micro.WithEndpointSubject(contracts.PoolRequest)),
		svc.AddEndpoint("rate", bus.JSON(ctx, 0, func(context.Context, contracts.RateRequest) (contracts.RateReply, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			start := time.Now().Add(-testBucket).Truncate(testBucket)
			return contracts.RateReply{Rate: "miss", Value: p.miss, Start: start}, nil
		}), micro.WithEndpointSubject(contracts.StatsRate)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (p *fakePool) set(f func(p *fakePool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// apply plays the manager finishing a command: the size changes, the
// request is terminal, the pool state records the resize, and it is evented.
func (p *fakePool) apply(t *testing.T, nc *nats.Conn, cmd contracts.ResizeCommand) {
	t.Helper()
	now := time.Now().UTC()
	st := contracts.ResizeRequestState{EventID: "e-" + cmd.RequestID, OccurredAt: now, RequestID: cmd.RequestID, Command: cmd, Status: contracts.StateApplied, ToSize: cmd.Target}
	p.set(func(p *fakePool) {
		st.FromSize = p.size
		p.size = cmd.Target
		p.requests[cmd.RequestID] = st
	})
	js, _ := jetstream.New(nc)
	kv, err := bus.EnsureKV(context.Background(), js, bus.PoolBucketConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(contracts.PoolState{Mode: p.mode, Target: cmd.Target, LastResize: now})
	if _, err := kv.Put(context.Background(), contracts.KeyState, data); err != nil {
		t.Fatal(err)
	}
	data, _ = json.Marshal(st)
	if err := nc.Publish(contracts.EvtRequest, data); err != nil {
		t.Fatal(err)
	}
}

func resizeStream(t *testing.T, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bus.EnsureStream(context.Background(), js, jetstream.StreamConfig{
		Name: contracts.StreamResize, Subjects: []string{contracts.PoolResizeCommand}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// commands returns every command in the stream with its Nats-Msg-Id.
func commands(t *testing.T, s jetstream.Stream) ([]contracts.ResizeCommand, []string) {
	t.Helper()
	ctx := context.Background()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []contracts.ResizeCommand
	var ids []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var c contracts.ResizeCommand
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return cmds, ids
}

func start(t *testing.T, nc *nats.Conn, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nc, cfg, nil) }()
	bustest.Eventually(t, 10*time.Second, func() error {
		_, err := decisions(nc)
		return err
	})
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v on cancel, want nil", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func decisions(nc *nats.Conn) ([]contracts.ScalerDecision, error) {
	l, err := bus.Request[contracts.DecisionList](context.Background(), nc, contracts.ScalerDecisions, nil)
	return l.Decisions, err
}

// waitDecisions waits until at least n decisions exist and returns them (newest first).
func waitDecisions(t *testing.T, nc *nats.Conn, n int) []contracts.ScalerDecision {
	t.Helper()
	var ds []contracts.ScalerDecision
	bustest.Eventually(t, 20*time.Second, func() error {
		var err error
		if ds, err = decisions(nc); err != nil {
			return err
		}
		if len(ds) < n {
			return fmt.Errorf("%d decisions, want %d", len(ds), n)
		}
		return nil
	})
	return ds
}

func TestHighMissRateGrowsOnceThenHolds(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	stream := resizeStream(t, nc)
	pool := newFakePool(t, nc, 2, f(0.9))

	events := make(chan contracts.ScalerDecision, 1024)
	sub, err := nc.Subscribe(contracts.EvtDecision, func(m *nats.Msg) {
		var d contracts.ScalerDecision
		if json.Unmarshal(m.Data, &d) == nil {
			events <- d
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	start(t, nc, Config{Tick: testTick, Bucket: testBucket})

	var grow contracts.ResizeCommand
	bustest.Eventually(t, 20*time.Second, func() error {
		cmds, ids := commands(t, stream)
		if len(cmds) != 1 {
			return fmt.Errorf("%d commands in the stream", len(cmds))
		}
		grow = cmds[0]
		if grow.Target != 4 || grow.Change != 0 || grow.Source != contracts.SourceScaler || ids[0] != grow.RequestID || grow.RequestID == "" {
			t.Fatalf("command %+v with msg id %q, want target 4 from the scaler with msg id = request id", grow, ids[0])
		}
		return nil
	})

	// The manager has queued it but not run it yet (and, like a manager that
	// counts only its own requests, reports nothing pending): the scaler waits
	// on its own request, however many ticks pass.
	pool.set(func(p *fakePool) {
		p.requests[grow.RequestID] = contracts.ResizeRequestState{RequestID: grow.RequestID, Command: grow, Status: contracts.StateQueued}
	})
	ds := waitDecisions(t, nc, len(mustDecisions(t, nc))+8)
	if cmds, _ := commands(t, stream); len(cmds) != 1 {
		t.Fatalf("%d commands while the first one is pending, want 1", len(cmds))
	}
	if !strings.Contains(ds[0].Reason, "our resize request "+grow.RequestID+" is queued") {
		t.Errorf("newest decision while waiting: %q", ds[0].Reason)
	}
	for i := 1; i < len(ds); i++ {
		if ds[i].OccurredAt.After(ds[i-1].OccurredAt) {
			t.Fatalf("decisions are not newest first at %d", i)
		}
	}

	// The manager applies it; the miss rate settles within the thresholds.
	pool.set(func(p *fakePool) { p.miss = f(0.5) })
	pool.apply(t, nc, grow)
	bustest.Eventually(t, 20*time.Second, func() error {
		ds, err := decisions(nc)
		if err != nil || len(ds) == 0 || !strings.Contains(ds[0].Reason, "within") || ds[0].Nodes != 4 {
			return fmt.Errorf("newest decision %+v (%v), want a steady 'within' at 4 nodes", ds, err)
		}
		return nil
	})
	n := len(mustDecisions(t, nc))
	ds = waitDecisions(t, nc, n+10)
	for _, d := range ds[:10] {
		if d.Action != contracts.DecisionNone || d.RequestID != "" {
			t.Errorf("steady state produced %+v", d)
		}
	}
	if cmds, _ := commands(t, stream); len(cmds) != 1 {
		t.Fatalf("%d commands after a steady period, want 1 (no flapping)", len(cmds))
	}

	// Parameters change live: a lower max threshold makes 0.5 a high miss rate.
	pool.set(func(p *fakePool) {
		p.mode.Params = contracts.AutoParams{MaxMissRate: 0.45, MinMissRate: 0.1, ExpandRatio: 1.5, ShrinkRatio: 0.5}
	})
	bustest.Eventually(t, 20*time.Second, func() error {
		cmds, _ := commands(t, stream)
		if len(cmds) != 2 {
			return fmt.Errorf("%d commands after lowering the max threshold, want 2", len(cmds))
		}
		if cmds[1].Target != 6 { // max(5, ⌈4 × 1.5⌉)
			t.Fatalf("second command %+v, want target 6", cmds[1])
		}
		return nil
	})

	// Every decision was evented, with its reason.
	seen := 0
	for len(events) > 0 {
		d := <-events
		if d.EventID == "" || d.Reason == "" || d.OccurredAt.IsZero() {
			t.Errorf("decision event without id, reason or time: %+v", d)
		}
		seen++
	}
	if seen < 20 {
		t.Errorf("only %d decision events", seen)
	}
}

func mustDecisions(t *testing.T, nc *nats.Conn) []contracts.ScalerDecision {
	t.Helper()
	ds, err := decisions(nc)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestNoCommandsWithoutReason(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	stream := resizeStream(t, nc)
	pool := newFakePool(t, nc, 3, f(0.5))
	stop := start(t, nc, Config{Tick: testTick, Bucket: testBucket, Keep: 50})

	cases := []struct {
		name   string
		set    func(p *fakePool)
		reason string
	}{
		{"steady", func(p *fakePool) {}, "within"},
		{"no gets", func(p *fakePool) { p.miss = nil }, "no gets in the last 200ms bucket"},
		{"manual mode", func(p *fakePool) { p.miss = f(0.99); p.mode.Mode = contracts.ModeManual }, "no action: manual mode"},
		{"resize pending", func(p *fakePool) { p.mode.Mode = contracts.ModeAutomatic; p.pending = 1 }, "1 pending"},
	}
	for _, c := range cases {
		pool.set(c.set)
		bustest.Eventually(t, 20*time.Second, func() error {
			ds, err := decisions(nc)
			if err != nil || len(ds) == 0 || !strings.Contains(ds[0].Reason, c.reason) {
				return fmt.Errorf("%s: newest decision %v (%v), want %q", c.name, ds, err, c.reason)
			}
			return nil
		})
		waitDecisions(t, nc, min(len(mustDecisions(t, nc))+5, 50))
	}
	if cmds, _ := commands(t, stream); len(cmds) != 0 {
		t.Fatalf("%d commands without a reason to resize: %+v", len(cmds), cmds)
	}
	ds := mustDecisions(t, nc)
	if len(ds) > 50 {
		t.Errorf("%d decisions kept, want at most 50", len(ds))
	}

	// The decisions survive a restart (same server, new Run).
	stop()
	before := ds[0].EventID
	start(t, nc, Config{Tick: time.Hour, Bucket: testBucket, Keep: 50})
	after := mustDecisions(t, nc)
	if len(after) != len(ds) || after[0].EventID != before {
		t.Errorf("after restart %d decisions (newest %s), want %d (newest %s)", len(after), after[0].EventID, len(ds), before)
	}
}

func TestManagerDownIsNoAction(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	start(t, nc, Config{Tick: testTick, Bucket: testBucket})
	ds := waitDecisions(t, nc, 1)
	if ds[0].Action != contracts.DecisionNone || !strings.Contains(ds[0].Reason, "cannot read the pool mode") {
		t.Errorf("decision without a manager: %+v", ds[0])
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	if err := Run(context.Background(), nc, Config{Tick: time.Nanosecond, MaxNodes: -1}, nil); err == nil || !strings.Contains(err.Error(), "tick") || !strings.Contains(err.Error(), "max nodes") {
		t.Errorf("Run with a bad config: %v", err)
	}
}
