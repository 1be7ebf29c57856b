package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// replay applies accepted changes serially from size 1 within 1..max and
// returns the expected status of each and the final size.
func replay(recs []contracts.ResizeRequestState, maxNodes int) ([]string, int) {
	size := 1
	out := make([]string, len(recs))
	for i, r := range recs {
		next := size + r.Command.Change
		if next < 1 || next > maxNodes {
			out[i] = contracts.StateRejected
			continue
		}
		out[i] = contracts.StateApplied
		size = next
	}
	return out, size
}

func TestConcurrentManualRequests(t *testing.T) {
	e := newEnv(t, nil) // pool of 1, max 4
	events := collect[contracts.ResizeRequestState](t, e.client, contracts.EvtRequest)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))

	const N = 50
	rng := rand.New(rand.NewPCG(7, 8))
	changes := make([]string, N)
	for i := range changes {
		changes[i] = "increase"
		if rng.IntN(5) < 2 {
			changes[i] = "decrease"
		}
	}
	var wg sync.WaitGroup
	replies := make(chan contracts.ResizeRequestState, N)
	errs := make(chan error, N)
	for i := range N {
		wg.Go(func() {
			req := contracts.ResizeRequest{RequestID: fmt.Sprintf("req-%02d", i), Change: changes[i], WaitMS: 60000}
			rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolResize, req)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", req.RequestID, err)
				return
			}
			replies <- rec
		})
	}
	wg.Wait()
	close(replies)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var recs []contracts.ResizeRequestState
	seqs := map[uint64]bool{}
	for r := range replies {
		if !contracts.Terminal(r.Status) {
			t.Errorf("%s answered %s, want a terminal state", r.RequestID, r.Status)
		}
		if seqs[r.Sequence] || r.Sequence == 0 {
			t.Errorf("%s has sequence %d (duplicate or missing)", r.RequestID, r.Sequence)
		}
		seqs[r.Sequence] = true
		recs = append(recs, r)
	}
	if len(recs) != N {
		t.Fatalf("%d answers, want %d", len(recs), N)
	}
	slices.SortFunc(recs, func(a, b contracts.ResizeRequestState) int { return int(a.Sequence) - int(b.Sequence) })
	want, final := replay(recs, e.cfg.MaxNodes)
	applied, rejected := 0, 0
	for i, r := range recs {
		if r.Status != want[i] {
			t.Errorf("%s (seq %d, %s) ended %s, serial replay says %s", r.RequestID, r.Sequence, r.Command.Source, r.Status, want[i])
		}
		if r.Status == contracts.StateRejected {
			rejected++
			if !strings.Contains(r.Reason, "maximum") && !strings.Contains(r.Reason, "minimum") {
				t.Errorf("%s rejected without a bound reason: %q", r.RequestID, r.Reason)
			}
		} else {
			applied++
		}
		if len(r.History) < 3 || r.History[0].State != contracts.StateQueued || r.History[len(r.History)-1].State != r.Status {
			t.Errorf("%s history %+v", r.RequestID, r.History)
		}
	}
	if rejected == 0 || applied == 0 {
		t.Errorf("applied %d, rejected %d: the sequence should hit a bound", applied, rejected)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(final))
	status, err := call[contracts.PoolStatus](t, e.client, contracts.PoolStatusSubject, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status.Size != final || status.Target != final || status.Pending != 0 {
		t.Fatalf("status size %d target %d pending %d, want %d/%d/0", status.Size, status.Target, status.Pending, final, final)
	}
	// Every request was evented in its terminal state.
	bustest.Eventually(t, 5*time.Second, func() error {
		terminal := map[string]bool{}
		for _, ev := range events.all() {
			if contracts.Terminal(ev.Status) {
				terminal[ev.RequestID] = true
			}
		}
		if len(terminal) != N {
			return fmt.Errorf("%d terminal request events, want %d", len(terminal), N)
		}
		return nil
	})
	list, err := call[contracts.ResizeRequestList](t, e.client, contracts.PoolRequests, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Requests) != N || list.Requests[0].Sequence < list.Requests[N-1].Sequence {
		t.Fatalf("requests list has %d entries, want %d, most recent first", len(list.Requests), N)
	}
}

func TestExactlyOnceAcrossRestart(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxNodes = 8 })
	e.launcher.gate["node-3"] = make(chan struct{})
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))

	changes := []string{"increase", "increase", "increase", "decrease", "increase"}
	for i, ch := range changes {
		rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolResize, contracts.ResizeRequest{RequestID: fmt.Sprintf("r%d", i), Change: ch})
		if err != nil || contracts.Terminal(rec.Status) {
			t.Fatalf("queue %d: %+v %v", i, rec, err)
		}
	}
	// The second command blocks launching node-3: stop the manager there.
	select {
	case id := <-e.launcher.blocked:
		if id != "node-3" {
			t.Fatalf("blocked launching %s", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the launch of node-3 never started")
	}
	e.stop()
	st := e.state()
	if st.Current == nil || st.Current.Command.RequestID != "r1" || st.Target != 3 || !slices.Contains(st.Launching, "node-3") {
		t.Fatalf("stored state after the stop: current %+v target %d launching %v", st.Current, st.Target, st.Launching)
	}
	close(e.launcher.gate["node-3"])

	e.start()
	for i := range changes {
		rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: fmt.Sprintf("r%d", i), WaitMS: 30000})
		if err != nil {
			t.Fatal(err)
		}
		wantFrom := []int{1, 2, 3, 4, 3}[i]
		if rec.Status != contracts.StateApplied || rec.FromSize != wantFrom || rec.ToSize != wantFrom+rec.Command.Change {
			t.Fatalf("r%d: %s from %d to %d, want applied from %d", i, rec.Status, rec.FromSize, rec.ToSize, wantFrom)
		}
	}
	bustest.Eventually(t, 10*time.Second, e.settled(4))
	launched, terminated := e.launcher.history()
	if want := []contracts.NodeID{"node-1", "node-2", "node-3", "node-4", "node-5"}; !slices.Equal(launched, want) {
		t.Fatalf("launched %v, want %v (each id once, none reused)", launched, want)
	}
	if len(terminated) != 1 {
		t.Fatalf("terminated %v, want exactly one node", terminated)
	}
	if st := e.state(); st.Target != 4 || st.NextNode != 5 {
		t.Fatalf("target %d next node %d, want 4 and 5", st.Target, st.NextNode)
	}
}

func TestPoisonCommandIsTerminatedAndTheQueueGoesOn(t *testing.T) {
	e := newEnv(t, nil)
	events := collect[contracts.ResizeRequestState](t, e.client, contracts.EvtRequest)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))

	js, err := jetstream.New(e.client)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	publish := func(id string, body []byte) {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: contracts.PoolResizeCommand, Data: body}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	publish("poison-1", []byte("{not json"))
	bad, _ := json.Marshal(contracts.ResizeCommand{RequestID: "poison-2", Change: 5, Source: "scaler"})
	publish("poison-2", bad)
	good, _ := json.Marshal(contracts.ResizeCommand{RequestID: "good-1", Target: 3, Source: contracts.SourceScaler, RequestedAt: time.Now().UTC()})
	publish("good-1", good)

	for _, id := range []string{"poison-1", "poison-2"} {
		rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: id, WaitMS: 20000})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != contracts.StateFailed || !strings.Contains(rec.Reason, "invalid command") {
			t.Fatalf("%s: %s %q, want failed as an invalid command", id, rec.Status, rec.Reason)
		}
	}
	rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: "good-1", WaitMS: 20000})
	if err != nil || rec.Status != contracts.StateApplied || rec.ToSize != 3 {
		t.Fatalf("good-1 after the poison: %+v %v", rec, err)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(3))
	if st := e.state(); st.Mode.Mode != contracts.ModeManual {
		t.Fatalf("mode %s", st.Mode.Mode)
	}
	bustest.Eventually(t, 5*time.Second, func() error {
		for _, ev := range events.all() {
			if ev.RequestID == "poison-1" && ev.Status == contracts.StateFailed {
				return nil
			}
		}
		return fmt.Errorf("no failed event for poison-1")
	})
	info, err := js.Consumer(ctx, contracts.StreamResize, contracts.ConsumerResize)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending != 0 || ci.NumPending != 0 || ci.AckFloor.Stream != 3 {
		t.Fatalf("consumer: ack pending %d, pending %d, ack floor %d; want 0, 0, 3", ci.NumAckPending, ci.NumPending, ci.AckFloor.Stream)
	}
}

func TestDuplicateRequestIDQueuesOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	first := e.resize(contracts.ResizeRequest{RequestID: "same", Change: "increase"})
	again := e.resize(contracts.ResizeRequest{RequestID: "same", Change: "increase"})
	if first.Sequence != again.Sequence || again.Status != contracts.StateApplied {
		t.Fatalf("retry of the same request id: %+v vs %+v", first, again)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(2))
}

// TestRandomStopsNeverLoseOrRepeat stops the manager again and again at
// varying points of the work (after a random number of table writes) while
// a queue of resizes runs; in the end every command is applied or rejected
// exactly as a serial replay says, and no node id was launched twice.
func TestRandomStopsNeverLoseOrRepeat(t *testing.T) {
	e := newEnv(t, nil) // max 4
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	rng := rand.New(rand.NewPCG(3, 4))
	const N = 24
	for i := range N {
		change := "increase"
		if rng.IntN(2) == 0 {
			change = "decrease"
		}
		if _, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolResize, contracts.ResizeRequest{RequestID: fmt.Sprintf("c%02d", i), Change: change}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	writes := 0
	sub, err := e.client.Subscribe(contracts.EvtTable, func(*nats.Msg) {
		mu.Lock()
		writes++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	stops := 0
	for round := 0; round < 10; round++ {
		mu.Lock()
		target := writes + 1 + rng.IntN(3)
		mu.Unlock()
		drained := false
		bustest.Eventually(t, 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if writes >= target {
				return nil
			}
			if st, err := readJSON[poolRecord](e, contracts.KeyState); err == nil && st.LastApplied >= N {
				drained = true
				return nil
			}
			return fmt.Errorf("round %d: %d table writes, waiting for %d", round, writes, target)
		})
		if drained {
			break
		}
		e.stop()
		e.start()
		stops++
	}
	if stops < 3 {
		t.Errorf("only %d stops happened while the queue ran", stops)
	}
	var recs []contracts.ResizeRequestState
	for i := range N {
		rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: fmt.Sprintf("c%02d", i), WaitMS: 30000})
		if err != nil || !contracts.Terminal(rec.Status) {
			t.Fatalf("c%02d: %+v %v", i, rec, err)
		}
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b contracts.ResizeRequestState) int { return int(a.Sequence) - int(b.Sequence) })
	want, final := replay(recs, e.cfg.MaxNodes)
	for i, r := range recs {
		if r.Status != want[i] {
			t.Errorf("%s (seq %d) ended %s, serial replay says %s", r.RequestID, r.Sequence, r.Status, want[i])
		}
	}
	bustest.Eventually(t, 20*time.Second, e.settled(final))
	launched, _ := e.launcher.history()
	seen := map[contracts.NodeID]bool{}
	for _, id := range launched {
		if seen[id] {
			t.Fatalf("%s launched twice: %v", id, launched)
		}
		seen[id] = true
	}
	if st := e.state(); st.LastApplied != recs[N-1].Sequence || st.Target != final {
		t.Fatalf("last applied %d target %d, want %d and %d", st.LastApplied, st.Target, recs[N-1].Sequence, final)
	}
}

// TestCommandHeldByADeadManagerIsRedeliveredAtOnce: a manager that died
// right after receiving a command (nothing stored yet) leaves it pending
// on the server until the ack wait; the next manager gets it back at once.
func TestCommandHeldByADeadManagerIsRedeliveredAtOnce(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AckWait = 10 * time.Minute })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	e.stop()

	ctx := context.Background()
	js, err := jetstream.New(e.client)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contracts.ResizeCommand{RequestID: "held", Change: 1, Source: contracts.SourceManual, RequestedAt: time.Now().UTC()})
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: contracts.PoolResizeCommand, Data: body}, jetstream.WithMsgID("held")); err != nil {
		t.Fatal(err)
	}
	// The "dying manager": takes the command and never answers.
	dead, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	djs, _ := jetstream.New(dead)
	cons, err := djs.Consumer(ctx, contracts.StreamResize, contracts.ConsumerResize)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if got != 1 {
		t.Fatalf("the dying manager fetched %d commands", got)
	}
	dead.Close()

	e.start()
	// Well within the 10 minute ack wait.
	rec, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: "held", WaitMS: 20000})
	if err != nil || rec.Status != contracts.StateApplied {
		t.Fatalf("held command: %+v %v", rec, err)
	}
	bustest.Eventually(t, 10*time.Second, e.settled(2))
}
