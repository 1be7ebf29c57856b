package scaler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// scalers counts the cachepool-scaler instances answering a micro ping.
func scalers(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+contracts.ServiceScaler, inbox, nil); err != nil {
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

// TestStandbyScalerTakesOverWhenTheActiveOneDies: of two scalers only one
// serves and decides; when its connection dies (no lease release), the
// other takes over, keeps the stored decisions and goes on deciding.
func TestStandbyScalerTakesOverWhenTheActiveOneDies(t *testing.T) {
	srv := bustest.RunServer(t)
	client := bustest.Connect(t, srv)
	pool := newFakePool(t, client, 2, nil)
	pool.set(func(p *fakePool) { p.mode.Mode = contracts.ModeManual })
	cfg := Config{Tick: testTick, Bucket: testBucket, LeaseTTL: time.Second}

	active := bustest.Connect(t, srv)
	start(t, active, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, bustest.Connect(t, srv), cfg, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the standby's Run returned %v on cancel, want nil", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the standby's Run did not return after cancel")
		}
	})
	for range 5 {
		if n := scalers(t, client); n != 1 {
			t.Fatalf("%d scalers answer a ping, want 1 (the standby must serve nothing)", n)
		}
	}
	waitDecisions(t, client, 3)

	active.Close() // dies: no release
	killed := time.Now()
	var after int
	bustest.Eventually(t, 20*time.Second, func() error {
		// A request that reached the dying scaler is never answered: bound each.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		list, err := bus.Request[contracts.DecisionList](rctx, client, contracts.ScalerDecisions, nil)
		if err != nil {
			return err
		}
		before := 0
		after = 0
		for _, d := range list.Decisions {
			if d.OccurredAt.After(killed) {
				after++
			} else {
				before++
			}
			if d.Action != contracts.DecisionNone {
				return fmt.Errorf("a manual pool got a %s decision", d.Action)
			}
		}
		if before == 0 {
			return fmt.Errorf("the decisions made before the takeover are gone")
		}
		if after < 3 {
			return fmt.Errorf("%d decisions since the kill", after)
		}
		return nil
	})
	t.Logf("%d decisions by the new active scaler within %v of the kill", after, time.Since(killed).Round(time.Millisecond))
	if n := scalers(t, client); n != 1 {
		t.Fatalf("%d scalers answer a ping after the takeover, want 1", n)
	}
}
