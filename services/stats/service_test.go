package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clock is a settable clock shared by the test and the service.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// start runs the service until the returned stop is called; stop asserts
// that Run returned nil.
func start(t *testing.T, nc *nats.Conn, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nc, cfg, nil) }()
	bustest.Eventually(t, 10*time.Second, func() error {
		_, err := bus.Request[contracts.StatsSeries](ctx, nc, contracts.StatsSeriesSubject, nil)
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

func publish(t *testing.T, nc *nats.Conn, reports []contracts.NodeReport) {
	t.Helper()
	for _, r := range reports {
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(contracts.NodeReportSubject(r.Node), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// storedCounters waits until KV holds want's counters for every bucket
// (the service writes changed buckets each tick, complete or not).
func waitStored(t *testing.T, kv jetstream.KeyValue, want map[time.Time]truthPoint) {
	t.Helper()
	ctx := context.Background()
	bustest.Eventually(t, 10*time.Second, func() error {
		for slot, w := range want {
			e, err := kv.Get(ctx, bucketKey(slot.UnixMilli()))
			if err != nil {
				return fmt.Errorf("bucket %v: %w", slot, err)
			}
			var r record
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return err
			}
			if r.Counters.Gets != w.gets || r.Counters.Misses != w.misses || len(r.Nodes) != w.nodes {
				return fmt.Errorf("bucket %v stored %+v, want gets %d misses %d nodes %d", slot, r.Counters, w.gets, w.misses, w.nodes)
			}
		}
		return nil
	})
}

func TestServiceThroughNATS(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	ctx := context.Background()
	clk := &clock{t: base} // the newest complete bucket is base-1m: empty
	cfg := Config{Bucket: time.Minute, Buckets: 30, Grace: 2 * time.Second, now: clk.Now}

	minutes := make(chan contracts.StatsPoint, 64)
	sub, err := nc.Subscribe(contracts.EvtMinute, func(m *nats.Msg) {
		var p contracts.StatsPoint
		if err := json.Unmarshal(m.Data, &p); err == nil {
			minutes <- p
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	stop := start(t, nc, cfg)

	// Reports for the next three minutes, duplicated and shuffled, published
	// while those buckets are still open on the service's clock.
	rng := rand.New(rand.NewPCG(42, 1))
	reports := genReports(rng, 3)
	want := truth(reports)
	publish(t, nc, deliveries(rng, reports))
	waitStored(t, kvOf(t, nc), want)

	// Close the three buckets: each is evented once, with its exact totals.
	clk.Set(base.Add(3*time.Minute + 3*time.Second))
	got := map[time.Time]contracts.StatsPoint{}
	deadline := time.After(10 * time.Second)
	for len(got) < 3 {
		select {
		case p := <-minutes:
			if p.Start.Before(base) {
				continue // the empty bucket before base, evented at start
			}
			if _, dup := got[p.Start]; dup {
				t.Errorf("bucket %v evented twice", p.Start)
			}
			if p.EventID == "" || p.OccurredAt.IsZero() {
				t.Errorf("minute event without event_id/occurred_at: %+v", p)
			}
			got[p.Start] = p
		case <-deadline:
			t.Fatalf("got %d minute events, want 3", len(got))
		}
	}
	for slot, w := range want {
		p := got[slot]
		if p.Gets != w.gets || p.Misses != w.misses || p.Items != w.items || p.Nodes != w.nodes {
			t.Errorf("evented bucket %v = %+v, want %+v", slot, p, w)
		}
	}

	series, err := bus.Request[contracts.StatsSeries](ctx, nc, contracts.StatsSeriesSubject, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSeries(t, series, want, base, base.Add(2*time.Minute))

	last := want[base.Add(2*time.Minute)]
	rate, err := bus.Request[contracts.RateReply](ctx, nc, contracts.StatsRate, contracts.RateRequest{Rate: "miss"})
	if err != nil {
		t.Fatal(err)
	}
	if rate.Value == nil || *rate.Value != float64(last.misses)/float64(last.gets) || !rate.Start.Equal(base.Add(2*time.Minute)) {
		t.Errorf("miss rate %+v, want %d/%d of the bucket at %v", rate, last.misses, last.gets, base.Add(2*time.Minute))
	}
	hit, err := bus.Request[contracts.RateReply](ctx, nc, contracts.StatsRate, contracts.RateRequest{Rate: "hit"})
	if err != nil || hit.Value == nil || *hit.Value != float64(last.hits)/float64(last.gets) {
		t.Errorf("hit rate %+v (%v), want %d/%d", hit, err, last.hits, last.gets)
	}
	_, err = bus.Request[contracts.RateReply](ctx, nc, contracts.StatsRate, contracts.RateRequest{Rate: "fast"})
	var we *contracts.Error
	if !errors.As(err, &we) || we.Code != contracts.CodeBadRequest {
		t.Errorf("rate=fast answered %v, want a 400", err)
	}

	// Restart on the same server: the buckets survive, redelivered reports
	// are not counted again, and a new report still counts.
	stop()
	stop2 := start(t, nc, cfg)
	defer stop2()
	series2, err := bus.Request[contracts.StatsSeries](ctx, nc, contracts.StatsSeriesSubject, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSeries(t, series2, want, base, base.Add(2*time.Minute))
	fresh := contracts.NodeReport{OccurredAt: base.Add(3*time.Minute + 10*time.Second), Node: "n1", Incarnation: "n1-a", Seq: 1000, Delta: contracts.Counters{Gets: 4, Misses: 4}}
	publish(t, nc, append(deliveries(rng, reports), fresh))
	want[base.Add(3*time.Minute)] = truthPoint{gets: 4, misses: 4, nodes: 1}
	waitStored(t, kvOf(t, nc), want)
	clk.Set(base.Add(4*time.Minute + 3*time.Second))
	series3, err := bus.Request[contracts.StatsSeries](ctx, nc, contracts.StatsSeriesSubject, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSeries(t, series3, want, base, base.Add(3*time.Minute))
	deadline = time.After(10 * time.Second)
	for {
		select {
		case p := <-minutes:
			if !p.Start.Equal(base.Add(3 * time.Minute)) {
				continue
			}
			if p.Gets != 4 || p.Misses != 4 || p.Nodes != 1 {
				t.Errorf("bucket after restart evented as %+v, want 4 gets, 4 misses, 1 node", p)
			}
			return
		case <-deadline:
			t.Fatal("no minute event for the bucket after the restart")
		}
	}
}

func TestServiceInMicroList(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	start(t, nc, Config{Bucket: 200 * time.Millisecond, Buckets: 300})
	// Real clock, short buckets: a report published now shows up in the series
	// once its bucket completes (300 buckets keep a minute, so no flake).
	publish(t, nc, []contracts.NodeReport{{OccurredAt: time.Now(), Node: "rt", Incarnation: "i", Seq: 1, Delta: contracts.Counters{Gets: 7, Hits: 7}, Items: 3}})
	bustest.Eventually(t, 10*time.Second, func() error {
		s, err := bus.Request[contracts.StatsSeries](context.Background(), nc, contracts.StatsSeriesSubject, nil)
		if err != nil {
			return err
		}
		var gets uint64
		for _, p := range s.Points {
			gets += p.Gets
		}
		if gets != 7 || len(s.Points) == 0 || s.Nodes[0] != 1 || s.RequestsPerMinute[0] != 7*300 {
			return fmt.Errorf("series %+v, want one bucket with 7 gets (2100 per minute)", s.Points)
		}
		return nil
	})
	msg, err := nc.Request("$SRV.INFO."+contracts.ServiceStats, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Name      string `json:"name"`
		Endpoints []struct {
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	subjects := map[string]bool{}
	for _, e := range info.Endpoints {
		subjects[e.Subject] = true
	}
	if info.Name != contracts.ServiceStats || !subjects[contracts.StatsSeriesSubject] || !subjects[contracts.StatsRate] {
		t.Errorf("micro info %+v lacks the stats endpoints", info)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	if err := Run(context.Background(), nc, Config{Buckets: -3}, nil); err == nil {
		t.Error("Run accepted buckets = -3")
	}
}

func kvOf(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), contracts.BucketStats)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
