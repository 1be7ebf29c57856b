package manager

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// responders counts the cachepool-manager instances answering a micro ping.
func responders(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+contracts.ServiceManager, inbox, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := sub.NextMsg(300 * time.Millisecond); err != nil {
			return n
		}
		n++
	}
}

// queueCommands asks for n random ±1 resizes through the API.
func queueCommands(t *testing.T, e *env, prefix string, n int, seed uint64) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := make([]string, n)
	for i := range ids {
		change := "increase"
		if rng.IntN(3) == 0 {
			change = "decrease"
		}
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
		if _, err := call[contracts.ResizeRequestState](t, e.client, contracts.PoolResize, contracts.ResizeRequest{RequestID: ids[i], Change: change}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// checkReplay waits until every request is terminal and checks that each
// ended as a serial replay says, was applied at most once, and that the pool
// settles at the replayed size with no node id launched twice.
func checkReplay(t *testing.T, e *env, ids []string) {
	t.Helper()
	var recs []contracts.ResizeRequestState
	for _, id := range ids {
		// A lookup sent while the managers change hands may go unanswered
		// or find no responder: ask again, as any client would.
		var rec contracts.ResizeRequestState
		bustest.Eventually(t, 60*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			rec, err = bus.Request[contracts.ResizeRequestState](ctx, e.client, contracts.PoolRequest, contracts.RequestLookup{RequestID: id, WaitMS: 3000})
			if err == nil && !contracts.Terminal(rec.Status) {
				err = fmt.Errorf("%s is %s", id, rec.Status)
			}
			return err
		})
		applies := 0
		for _, h := range rec.History {
			if h.State == contracts.StateApplied {
				applies++
			}
		}
		if applies > 1 {
			t.Fatalf("%s applied %d times: %+v", id, applies, rec.History)
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
	bustest.Eventually(t, 30*time.Second, e.settled(final))
	launched, _ := e.launcher.history()
	seen := map[contracts.NodeID]bool{}
	for _, id := range launched {
		if seen[id] {
			t.Fatalf("%s launched twice: %v", id, launched)
		}
		seen[id] = true
	}
}

// TestStandbyTakesOverWhenTheActiveManagerDies runs two managers: the
// standby serves nothing while the active one works; the active one's
// connection dies mid-queue (no lease release, like a kill -9); the standby
// takes over after the lease TTL and finishes the queue exactly once.
func TestStandbyTakesOverWhenTheActiveManagerDies(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeaseTTL = time.Second })
	active := bustest.Connect(t, e.srv)
	runManager(t, active, e.cfg)
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	runManager(t, bustest.Connect(t, e.srv), e.cfg)
	// Over several lease TTLs, only one manager ever answers.
	for range 5 {
		if n := responders(t, e.client); n != 1 {
			t.Fatalf("%d managers answer a ping, want 1 (the standby must serve nothing)", n)
		}
	}

	var writes atomic.Int32
	sub, err := e.client.Subscribe(contracts.EvtTable, func(*nats.Msg) { writes.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ids := queueCommands(t, e, "fo", 16, 11)
	bustest.Eventually(t, 20*time.Second, func() error {
		if writes.Load() < 3 {
			return fmt.Errorf("%d table writes so far", writes.Load())
		}
		return nil
	})
	st := e.state()
	if st.LastApplied >= uint64(len(ids)) {
		t.Fatalf("the queue finished before the kill (last applied %d); the test proves little", st.LastApplied)
	}
	active.Close() // dies mid-queue: no release
	killedAt := time.Now()

	checkReplay(t, e, ids)
	t.Logf("every command terminal %v after the active manager died (last applied at the kill: seq %d; includes lookups retried after a lost one)", time.Since(killedAt).Round(time.Millisecond), st.LastApplied)
	if n := responders(t, e.client); n != 1 {
		t.Fatalf("%d managers answer a ping after the takeover, want 1", n)
	}
}

// TestManagerThatLosesItsLeaseStopsWriting: when the lease is taken from
// the active manager (here by a foreign value, as after an expiry during a
// partition), it stops serving and writing while its connection stays up;
// once the lease is free again a manager takes over and finishes the queue.
func TestManagerThatLosesItsLeaseStopsWriting(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeaseTTL = time.Second })
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	ids := queueCommands(t, e, "lost", 8, 5)

	ctx := context.Background()
	js, err := jetstream.New(e.client)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := js.KeyValue(ctx, bus.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Put(ctx, LeaseRole, []byte(`{"instance":"intruder"}`)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if n := responders(t, e.client); n != 0 {
			return fmt.Errorf("%d managers still answer", n)
		}
		return nil
	})
	kv, err := e.kv()
	if err != nil {
		t.Fatal(err)
	}
	before, err := kv.Get(ctx, contracts.KeyTable)
	if err != nil {
		t.Fatal(err)
	}
	stBefore, err := kv.Get(ctx, contracts.KeyState)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody holds the lease now: nothing may change the table or state.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		tbl, err := kv.Get(ctx, contracts.KeyTable)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Get(ctx, contracts.KeyState)
		if err != nil {
			t.Fatal(err)
		}
		if tbl.Revision() != before.Revision() || st.Revision() != stBefore.Revision() {
			t.Fatal("the pool was written while no manager held the lease")
		}
	}
	if err := leases.Delete(ctx, LeaseRole); err != nil {
		t.Fatal(err)
	}
	checkReplay(t, e, ids)
}
