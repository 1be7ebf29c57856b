package manager

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))
	params := contracts.AutoParams{MaxMissRate: 0.7, MinMissRate: 0.2, ExpandRatio: 3, ShrinkRatio: 0.25}
	if _, err := call[contracts.ModeConfig](t, e.client, contracts.PoolSetAuto, params); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(e.client)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), contracts.StreamResize)
	if err != nil {
		t.Fatal(err)
	}
	messages := func() uint64 {
		info, err := stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before, msgs := e.state(), messages()

	cases := []struct {
		subject, body, field string
		code                 int
	}{
		{contracts.PoolResize, `{"change":"grow"}`, "change", 400},
		{contracts.PoolResize, `{"change":1}`, "change", 400},
		{contracts.PoolResize, `{"change":"increase"`, "JSON", 400},
		{contracts.PoolResize, `{"change":"increase","size":3}`, "size", 400},
		{contracts.PoolResize, `{"change":"increase","wait_ms":-5}`, "wait_ms", 400},
		{contracts.PoolResize, `{"change":"increase","request_id":"a b"}`, "request_id", 400},
		{contracts.PoolResize, `{"change":"increase","target":3}`, "target", 400},
		{contracts.PoolResize, `{"target":-2}`, "target", 400},
		{contracts.PoolResize, `{"change":"increase","source":"cron"}`, "source", 400},
		{contracts.PoolResize, `[]`, "JSON", 400},
		{contracts.PoolSetAuto, `{"max_miss_rate_threshold":0.3,"min_miss_rate_threshold":0.5,"expand_ratio":2,"shrink_ratio":0.5}`, "min_miss_rate_threshold", 400},
		{contracts.PoolSetAuto, `{"max_miss_rate_threshold":0.8,"min_miss_rate_threshold":0.1,"expand_ratio":1,"shrink_ratio":0.5}`, "expand_ratio", 400},
		{contracts.PoolSetAuto, `{"max_miss_rate_threshold":0.8,"min_miss_rate_threshold":0.1,"expand_ratio":2,"shrink_ratio":1.5}`, "shrink_ratio", 400},
		{contracts.PoolSetAuto, `{"max_miss_rate_threshold":"high","min_miss_rate_threshold":0.1,"expand_ratio":2,"shrink_ratio":0.5}`, "max_miss_rate_threshold", 400},
		{contracts.PoolSetAuto, `{"max_miss_rate_threshold":1.2,"min_miss_rate_threshold":0.1,"expand_ratio":2,"shrink_ratio":0.5}`, "max_miss_rate_threshold", 400},
		{contracts.PoolSetMode, `{"mode":"turbo"}`, "mode", 400},
		{contracts.PoolSetCacheConfig, `{"capacity":-1,"replacement_policy":"lru"}`, "capacity", 400},
		{contracts.PoolSetCacheConfig, `{"capacity":1e12}`, "capacity", 400},
		{contracts.PoolSetCacheConfig, `{"capacity":"big"}`, "capacity", 400},
		{contracts.PoolSetCacheConfig, `{"capacity":10,"replacement_policy":"fifo"}`, "replacement_policy", 400},
		{contracts.PoolSetCacheConfig, `{"replacement_policy":"lru","policy":"rr"}`, "policy", 400},
		{contracts.PoolSetCacheConfig, `{}`, "capacity", 400},
		{contracts.PoolSetCacheConfig, `{"capacity":10,"colour":"red"}`, "colour", 400},
		{contracts.PoolRequest, `{}`, "request_id", 400},
		{contracts.PoolRequest, `{"request_id":"../x"}`, "request_id", 400},
		{contracts.PoolRequest, `{"request_id":"nope"}`, "nope", 404},
		{contracts.PoolStatusSubject, `{"x":1}`, "x", 400},
	}
	for _, c := range cases {
		we := raw(t, e.client, c.subject, c.body)
		if we == nil {
			t.Errorf("%s %s: accepted", c.subject, c.body)
			continue
		}
		if we.Code != c.code || !strings.Contains(we.Message, c.field) {
			t.Errorf("%s %s: %d %q, want %d naming %s", c.subject, c.body, we.Code, we.Message, c.code, c.field)
		}
	}
	after := e.state()
	if after.Mode != before.Mode || after.Config != before.Config || after.Target != before.Target || after.LastApplied != before.LastApplied {
		t.Fatalf("state changed by bad input:\nbefore %+v\nafter  %+v", before.PoolState, after.PoolState)
	}
	if after.Mode.Mode != contracts.ModeAutomatic || after.Mode.Params != params {
		t.Fatalf("mode %+v, want automatic with %+v", after.Mode, params)
	}
	if got := messages(); got != msgs {
		t.Fatalf("bad input queued %d commands", got-msgs)
	}
}

func TestManualRequestSwitchesModeAndKeepsAutoParams(t *testing.T) {
	e := newEnv(t, nil)
	configEvents := collect[contracts.ConfigChanged](t, e.client, contracts.EvtConfig)
	e.start()
	bustest.Eventually(t, 20*time.Second, e.settled(1))

	mode, err := call[contracts.ModeConfig](t, e.client, contracts.PoolMode, nil)
	if err != nil || mode.Mode != contracts.ModeManual || mode.Params != contracts.DefaultAutoParams {
		t.Fatalf("initial mode %+v %v", mode, err)
	}
	params := contracts.AutoParams{MaxMissRate: 0.9, MinMissRate: 0.05, ExpandRatio: 1.5, ShrinkRatio: 0.75}
	mode, err = call[contracts.ModeConfig](t, e.client, contracts.PoolSetAuto, params)
	if err != nil || mode.Mode != contracts.ModeAutomatic || mode.Params != params {
		t.Fatalf("set auto %+v %v", mode, err)
	}
	// A scaler command does not touch the mode.
	if rec := e.resize(contracts.ResizeRequest{Target: 2, Source: contracts.SourceScaler}); rec.Status != contracts.StateApplied {
		t.Fatalf("scaler resize %+v", rec)
	}
	if st := e.state(); st.Mode.Mode != contracts.ModeAutomatic {
		t.Fatalf("a scaler resize switched the mode to %s", st.Mode.Mode)
	}
	// A manual request, even one rejected when it runs, switches to manual
	// and keeps the parameters.
	e.resize(contracts.ResizeRequest{Target: 4})
	rec := e.resize(contracts.ResizeRequest{Change: "increase"})
	if rec.Status != contracts.StateRejected || !strings.Contains(rec.Reason, "maximum") {
		t.Fatalf("increase at the max: %+v", rec)
	}
	mode, err = call[contracts.ModeConfig](t, e.client, contracts.PoolMode, nil)
	if err != nil || mode.Mode != contracts.ModeManual || mode.Params != params {
		t.Fatalf("after a manual request: %+v %v, want manual with %+v", mode, err, params)
	}
	mode, err = call[contracts.ModeConfig](t, e.client, contracts.PoolSetMode, contracts.SetModeRequest{Mode: contracts.ModeAutomatic})
	if err != nil || mode.Mode != contracts.ModeAutomatic || mode.Params != params {
		t.Fatalf("back to automatic: %+v %v", mode, err)
	}
	bustest.Eventually(t, 5*time.Second, func() error {
		if n := len(configEvents.all()); n != 3 {
			return bustest.Errorf("%d config events, want 3 (auto, manual, auto)", n)
		}
		return nil
	})
	bustest.Eventually(t, 10*time.Second, e.settled(4))
}
