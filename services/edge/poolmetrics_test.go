package edge

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

func TestMetricsMirrorTheLastStatsBucket(t *testing.T) {
	e := newEnv(t, envOpt{})
	if v := scrape(t, e)["cachepool_pool_miss_rate"]; !math.IsNaN(v) {
		t.Fatalf("miss rate before any bucket: %v, want NaN", v)
	}
	miss, hit := 0.25, 0.75
	pt := contracts.StatsPoint{Start: time.Now().UTC(), Gets: 400, Hits: 300, Misses: 100, Items: 42, Bytes: 4200, Nodes: 3, MissRate: &miss, HitRate: &hit}
	b, _ := json.Marshal(pt)
	if err := e.fnc.Publish(contracts.EvtMinute, b); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"cachepool_pool_miss_rate": 0.25, "cachepool_pool_hit_rate": 0.75, "cachepool_pool_bucket_gets": 400,
		"cachepool_pool_items": 42, "cachepool_pool_bytes": 4200, "cachepool_pool_nodes": 3,
	}
	waitFor(t, func() error {
		got := scrape(t, e)
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s = %v, want %v", name, got[name], v)
			}
		}
		return nil
	})
	// A bucket without gets has no rates.
	b, _ = json.Marshal(contracts.StatsPoint{Start: time.Now().UTC(), Nodes: 3})
	_ = e.fnc.Publish(contracts.EvtMinute, b)
	waitFor(t, func() error {
		if v := scrape(t, e)["cachepool_pool_miss_rate"]; !math.IsNaN(v) {
			return fmt.Errorf("miss rate %v, want NaN", v)
		}
		return nil
	})
}
