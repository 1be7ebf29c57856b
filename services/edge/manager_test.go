package edge

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cachepool/cachepool/contracts"
)

func contentOf(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	c, ok := m["content"].(map[string]any)
	if !ok {
		t.Fatalf("no content object in %v", m)
	}
	return c
}

func TestManagerReads(t *testing.T) {
	e := newEnv(t, envOpt{})

	status, m := e.doJSON(http.MethodGet, "/api/manager/pool_node_list", "")
	c := contentOf(t, m)
	ids, _ := c["pool_node_list"].([]any)
	nodes, _ := c["nodes"].([]any)
	if status != 200 || len(ids) != 2 || ids[0] != "n1" || len(nodes) != 2 {
		t.Fatalf("pool_node_list: %d %v", status, m)
	}
	if n0, _ := nodes[0].(map[string]any); n0["id"] != "n1" || n0["state"] != contracts.NodeActive || n0["partitions"] != 8.0 {
		t.Fatalf("pool_node_list nodes[0] = %v", nodes[0])
	}

	status, m = e.doJSON(http.MethodGet, "/api/manager/poolsize", "")
	c = contentOf(t, m)
	if status != 200 || c["size"] != 2.0 || c["max_nodes"] != 3.0 || c["target"] != 2.0 {
		t.Fatalf("poolsize: %d %v", status, m)
	}

	// Manual mode: resize_pool_parameters is {}; the stored ones are kept aside.
	status, m = e.doJSON(http.MethodGet, "/api/manager/poolsize/config", "")
	c = contentOf(t, m)
	if p, _ := c["resize_pool_parameters"].(map[string]any); status != 200 || c["resize_pool_option"] != "manual" || p == nil || len(p) != 0 {
		t.Fatalf("poolsize/config (manual): %d %v", status, m)
	}
	if sp, _ := c["stored_parameters"].(map[string]any); sp["expand_ratio"] != 2.0 {
		t.Fatalf("stored_parameters: %v", c)
	}

	status, m = e.doJSON(http.MethodGet, "/api/manager/cache/config", "")
	c = contentOf(t, m)
	if status != 200 || c["capacity"] != 64.0 || c["replacement_policy"] != "lru" {
		t.Fatalf("cache/config: %d %v", status, m)
	}

	// Neither stats nor scaler runs: empty series and list, with success.
	status, m = e.doJSON(http.MethodGet, "/api/manager/aggregate_stats", "")
	c = contentOf(t, m)
	for _, f := range []string{"miss_rate", "hit_rate", "number_of_items_in_cache", "total_size_of_items_in_cache", "number_of_requests_served_per_minute", "number_of_nodes", "timestamps"} {
		if a, ok := c[f].([]any); !ok || len(a) != 0 {
			t.Fatalf("aggregate_stats without stats: %s = %v, want []", f, c[f])
		}
	}
	status, m = e.doJSON(http.MethodGet, "/api/manager/scaler/decisions", "")
	if d, ok := contentOf(t, m)["decisions"].([]any); status != 200 || !ok || len(d) != 0 {
		t.Fatalf("scaler/decisions: %d %v", status, m)
	}

	startStats(t, e.fnc, 0.4)
	status, m = e.doJSON(http.MethodGet, "/api/manager/aggregate_stats", "")
	c = contentOf(t, m)
	mr, _ := c["miss_rate"].([]any)
	nn, _ := c["number_of_nodes"].([]any)
	if status != 200 || len(mr) != 2 || mr[0] != nil || mr[1] != 0.4 || len(nn) != 2 || nn[1] != 2.0 {
		t.Fatalf("aggregate_stats: %d %v", status, m)
	}

	status, m = e.doJSON(http.MethodGet, "/api/manager/poolsize/requests/unknown-id", "")
	if status != 404 {
		t.Fatalf("unknown request id: %d %v", status, m)
	}
}

func TestManagerResize(t *testing.T) {
	e := newEnv(t, envOpt{})

	// No wait: 202 with the queued state.
	status, m := e.doJSON(http.MethodPost, "/api/manager/poolsize/manual", `{"change":"increase"}`)
	c := contentOf(t, m)
	if status != 202 || c["status"] != contracts.StateQueued || c["request_id"] == "" {
		t.Fatalf("manual without wait: %d %v", status, m)
	}
	id, _ := c["request_id"].(string)
	status, m = e.doJSON(http.MethodGet, "/api/manager/poolsize/requests/"+id, "")
	if status != 200 || contentOf(t, m)["request_id"] != id {
		t.Fatalf("requests/%s: %d %v", id, status, m)
	}
	var req contracts.ResizeRequest
	if err := json.Unmarshal(e.mgr.body("resize"), &req); err != nil || req.Change != "increase" || req.WaitMS != 0 || req.Source != contracts.SourceManual {
		t.Fatalf("forwarded resize = %+v (%v)", req, err)
	}

	// Waited: 200 applied (2 → 3), then 409 at the bound with the reason.
	status, m = e.doJSON(http.MethodPost, "/api/manager/poolsize/manual?wait=5s", `{"change":"increase"}`)
	if c = contentOf(t, m); status != 200 || c["status"] != contracts.StateApplied || c["to_size"] != 3.0 {
		t.Fatalf("manual wait applied: %d %v", status, m)
	}
	if err := json.Unmarshal(e.mgr.body("resize"), &req); err != nil || req.WaitMS != 5000 {
		t.Fatalf("forwarded wait_ms = %d, want 5000", req.WaitMS)
	}
	status, m = e.doJSON(http.MethodPost, "/api/manager/poolsize/manual?wait=5s", `{"change":"increase"}`)
	if status != 409 || !strings.Contains(errMessage(m), "outside 1..3") || contentOf(t, m)["status"] != contracts.StateRejected {
		t.Fatalf("manual at the bound: %d %v", status, m)
	}

	// /api/poolsize/change waits by default.
	status, m = e.doJSON(http.MethodPost, "/api/poolsize/change", `{"change":"decrease"}`)
	if c = contentOf(t, m); status != 200 || c["status"] != contracts.StateApplied || c["to_size"] != 2.0 {
		t.Fatalf("poolsize/change: %d %v", status, m)
	}
	if err := json.Unmarshal(e.mgr.body("resize"), &req); err != nil || req.WaitMS != DefaultResizeWait.Milliseconds() {
		t.Fatalf("poolsize/change wait_ms = %d", req.WaitMS)
	}

	// Still pending when the wait ends: 202.
	e.mgr.mu.Lock()
	e.mgr.hold = true
	e.mgr.mu.Unlock()
	status, m = e.doJSON(http.MethodPost, "/api/manager/poolsize/manual?wait=50ms", `{"change":"decrease"}`)
	if status != 202 || contentOf(t, m)["status"] != contracts.StateQueued {
		t.Fatalf("pending after wait: %d %v", status, m)
	}

	status, m = e.doJSON(http.MethodGet, "/api/manager/poolsize/requests", "")
	if l, _ := contentOf(t, m)["requests"].([]any); status != 200 || len(l) != 5 {
		t.Fatalf("requests list: %d %v", status, m)
	}
}

// TestManagerBadInput: every malformed body is 400 naming the problem, and
// the manager sees no mutating request.
func TestManagerBadInput(t *testing.T) {
	e := newEnv(t, envOpt{})
	for _, c := range []struct {
		path, body, message string
	}{
		{"/api/manager/poolsize/manual", ``, "body"},
		{"/api/manager/poolsize/manual", `{"change":`, "invalid JSON"},
		{"/api/manager/poolsize/manual", `{"change":"increase"}{}`, "trailing"},
		{"/api/manager/poolsize/manual", `[]`, "JSON"},
		{"/api/manager/poolsize/manual", `{}`, "change is required"},
		{"/api/manager/poolsize/manual", `{"change":1}`, "change"},
		{"/api/manager/poolsize/manual", `{"change":"grow"}`, "change must be"},
		{"/api/manager/poolsize/manual", `{"change":"increase","extra":1}`, "extra"},
		{"/api/manager/poolsize/manual?wait=soon", `{"change":"increase"}`, "wait"},
		{"/api/manager/poolsize/manual?wait=-1s", `{"change":"increase"}`, "wait"},
		{"/api/manager/poolsize/manual?wait=1h", `{"change":"increase"}`, "wait"},
		{"/api/poolsize/change", `{"change":null}`, "change is required"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.6,"min_miss_rate_threshold":0.4,"expand_ratio":2}`, "shrink_ratio is required"},
		{"/api/manager/poolsize/automatic", `{}`, "max_miss_rate_threshold, min_miss_rate_threshold, expand_ratio, shrink_ratio are required"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":"0.6","min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":0.5}`, "max_miss_rate_threshold must be a float64"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.3,"min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":0.5}`, "must be below"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.6,"min_miss_rate_threshold":0.4,"expand_ratio":1,"shrink_ratio":0.5}`, "expand_ratio"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.6,"min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":1}`, "shrink_ratio"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":1.5,"min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":0.5}`, "max_miss_rate_threshold must be within"},
		{"/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.6,"min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":0.5,"auto_mode":"True"}`, "auto_mode"},
		{"/api/manager/cache/config", `{"capacity":64,"replacement_policy":"fifo"}`, "replacement_policy must be"},
		{"/api/manager/config", `{"capacity":64,"policy":"mru"}`, "replacement_policy must be"},
		{"/api/manager/cache/config", `{"capacity":"64","policy":"lru"}`, "capacity must be a float64"},
		{"/api/manager/cache/config", `{"capacity":0,"policy":"lru"}`, "capacity must be a positive"},
		{"/api/manager/cache/config", `{"capacity":-5,"policy":"lru"}`, "capacity must be a positive"},
		{"/api/manager/cache/config", `{"capacity":1e9,"policy":"lru"}`, "capacity must be a positive"},
		{"/api/manager/cache/config", `{"policy":"lru"}`, "capacity is required"},
		{"/api/manager/cache/config", `{"capacity":64}`, "replacement_policy is required"},
		{"/api/manager/cache/config", `{"capacity":64,"policy":"lru","replacement_policy":"random"}`, "disagree"},
		{"/api/manager/cache/config", `{"capacity":64,"policy":"lru","size":3}`, "size"},
		{"/api/manager/mode", `{"mode":"turbo"}`, "mode must be"},
		{"/api/manager/mode", `{"mode":true}`, "mode"},
		{"/api/configure_cache?policy=fifo", ``, "policy"},
		{"/api/configure_cache?numNodes=two", ``, "numNodes"},
		{"/api/configure_cache?numNodes=0", ``, "numNodes"},
		{"/api/configure_cache?cacheSize=big", ``, "cacheSize"},
		{"/api/configure_cache?cacheSize=-1", ``, "capacity must be a positive"},
		{"/api/configure_cache?mode=turbo", ``, "mode"},
		{"/api/configure_cache?maxMiss=0.1&minMiss=0.5", ``, "must be below"},
		{"/api/configure_cache?expRatio=x", ``, "expRatio"},
	} {
		status, m := e.doJSON(http.MethodPost, c.path, c.body)
		if status != 400 || !strings.Contains(errMessage(m), c.message) {
			t.Errorf("POST %s %s: status %d %q, want 400 containing %q", c.path, c.body, status, errMessage(m), c.message)
		}
	}
	if n := e.mgr.mutations(); n != 0 {
		t.Fatalf("bad input reached the manager: %d mutating calls", n)
	}
}

func TestManagerWrites(t *testing.T) {
	e := newEnv(t, envOpt{})

	status, m := e.doJSON(http.MethodPost, "/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.7,"min_miss_rate_threshold":0.2,"expand_ratio":1.5,"shrink_ratio":0.25}`)
	c := contentOf(t, m)
	p, _ := c["resize_pool_parameters"].(map[string]any)
	if status != 200 || c["resize_pool_option"] != "automatic" || p["max_miss_rate_threshold"] != 0.7 || p["shrink_ratio"] != 0.25 {
		t.Fatalf("automatic: %d %v", status, m)
	}

	// Both paths, both field names; rr is random.
	for _, c := range []struct{ path, body, want string }{
		{"/api/manager/cache/config", `{"capacity":32,"replacement_policy":"lru"}`, "lru"},
		{"/api/manager/config", `{"capacity":16,"policy":"rr"}`, "random"},
		{"/api/manager/cache/config", `{"capacity":8.5,"policy":"random","replacement_policy":"rr"}`, "random"},
	} {
		status, m := e.doJSON(http.MethodPost, c.path, c.body)
		got := contentOf(t, m)
		var sent contracts.CacheConfig
		_ = json.Unmarshal(e.mgr.body("set_cache_config"), &sent)
		if status != 200 || got["replacement_policy"] != c.want || sent.Policy != c.want {
			t.Fatalf("%s %s: %d %v (forwarded %+v)", c.path, c.body, status, m, sent)
		}
	}
	status, m = e.doJSON(http.MethodGet, "/api/manager/cache/config", "")
	if c = contentOf(t, m); c["capacity"] != 8.5 || c["replacement_policy"] != "random" {
		t.Fatalf("cache config after set: %v", m)
	}

	status, m = e.doJSON(http.MethodPost, "/api/manager/mode", `{"mode":"manual"}`)
	if c = contentOf(t, m); status != 200 || c["resize_pool_option"] != "manual" {
		t.Fatalf("mode: %d %v", status, m)
	}
	if sp, _ := c["stored_parameters"].(map[string]any); sp["max_miss_rate_threshold"] != 0.7 {
		t.Fatalf("manual mode lost the stored parameters: %v", c)
	}

	status, m = e.doJSON(http.MethodDelete, "/api/manager/cache/clear", "")
	if c = contentOf(t, m); status != 200 || c["items"] != 3.0 || c["bytes"] != 300.0 {
		t.Fatalf("cache/clear: %d %v", status, m)
	}
	status, m = e.doJSON(http.MethodDelete, "/api/manager/data/clear", "")
	if c = contentOf(t, m); status != 200 || c["rows"] != 4.0 || c["objects"] != 4.0 || c["cached_items"] != 2.0 {
		t.Fatalf("data/clear: %d %v", status, m)
	}
}

func TestConfigureCache(t *testing.T) {
	e := newEnv(t, envOpt{})
	status, m := e.doJSON(http.MethodPost, "/api/configure_cache?mode=auto&numNodes=3&cacheSize=128&policy=RR&expRatio=1.8&shrinkRatio=0.3&maxMiss=0.8&minMiss=0.1", "")
	if status != 200 || m["mode"] != "automatic" || m["numNodes"] != 3.0 || m["cacheSize"] != 128.0 || m["policy"] != "random" {
		t.Fatalf("configure_cache: %d %v", status, m)
	}
	e.mgr.mu.Lock()
	mode, cache, size := e.mgr.mode, e.mgr.cache, e.mgr.size
	e.mgr.mu.Unlock()
	want := contracts.AutoParams{MaxMissRate: 0.8, MinMissRate: 0.1, ExpandRatio: 1.8, ShrinkRatio: 0.3}
	if mode.Mode != contracts.ModeAutomatic || mode.Params != want || cache.CapacityMB != 128 || cache.Policy != "random" || size != 3 {
		t.Fatalf("manager state after configure_cache: mode %+v cache %+v size %d", mode, cache, size)
	}

	// Parameters alone keep the current mode (here: manual after the switch).
	if status, m = e.doJSON(http.MethodPost, "/api/configure_cache?mode=manual", ""); status != 200 || m["mode"] != "manual" {
		t.Fatalf("configure_cache mode=manual: %d %v", status, m)
	}
	if status, m = e.doJSON(http.MethodPost, "/api/configure_cache?expRatio=3", ""); status != 200 || m["mode"] != "manual" {
		t.Fatalf("configure_cache expRatio only: %d %v", status, m)
	}
	e.mgr.mu.Lock()
	mode = e.mgr.mode
	e.mgr.mu.Unlock()
	if mode.Mode != contracts.ModeManual || mode.Params.ExpandRatio != 3 || mode.Params.MaxMissRate != 0.8 {
		t.Fatalf("after expRatio only: %+v", mode)
	}
	// A resize beyond the bound is 409.
	if status, m = e.doJSON(http.MethodPost, "/api/configure_cache?numNodes=9", ""); status != 409 {
		t.Fatalf("configure_cache numNodes=9: %d %v", status, m)
	}
}

// TestAdminToken: with a token, mutating endpoints need it; reads and uploads do not.
func TestAdminToken(t *testing.T) {
	e := newEnv(t, envOpt{cfg: Config{AdminToken: "s3cret"}})
	mutating := []struct{ method, path, body string }{
		{http.MethodPost, "/api/manager/poolsize/manual", `{"change":"increase"}`},
		{http.MethodPost, "/api/poolsize/change", `{"change":"increase"}`},
		{http.MethodPost, "/api/manager/poolsize/automatic", `{"max_miss_rate_threshold":0.6,"min_miss_rate_threshold":0.4,"expand_ratio":2,"shrink_ratio":0.5}`},
		{http.MethodPost, "/api/manager/config", `{"capacity":1,"policy":"lru"}`},
		{http.MethodPost, "/api/manager/cache/config", `{"capacity":1,"policy":"lru"}`},
		{http.MethodDelete, "/api/manager/cache/clear", ``},
		{http.MethodDelete, "/api/manager/data/clear", ``},
		{http.MethodPost, "/api/manager/mode", `{"mode":"manual"}`},
		{http.MethodPost, "/api/delete_all", ``},
		{http.MethodPost, "/api/configure_cache?mode=manual", ``},
	}
	for _, c := range mutating {
		for _, auth := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}, {"Authorization", "Basic czNjcmV0"}, {"Authorization", "Bearer s3cret-and-more"}} {
			status, m := e.doJSON(c.method, c.path, c.body, auth...)
			if status != 401 {
				t.Fatalf("%s %s with %v: %d %v, want 401", c.method, c.path, auth, status, m)
			}
		}
	}
	if e.mgr.mutations() != 0 || e.store.clears.Load() != 0 {
		t.Fatal("an unauthorized request reached a service")
	}
	for _, c := range mutating {
		status, m := e.doJSON(c.method, c.path, c.body, "Authorization", "Bearer s3cret")
		if status >= 400 {
			t.Fatalf("%s %s with the token: %d %v", c.method, c.path, status, m)
		}
	}
	// Reads and uploads stay open.
	if status, m := e.doJSON(http.MethodGet, "/api/manager/poolsize", ""); status != 200 {
		t.Fatalf("poolsize without token: %d %v", status, m)
	}
	body, ct := multipartBody(strp("open"), pngBytes(10), "")
	if status, _, b := e.do(http.MethodPost, "/api/upload", body, "Content-Type", ct); status != 200 {
		t.Fatalf("upload without token: %d %s", status, b)
	}
}
