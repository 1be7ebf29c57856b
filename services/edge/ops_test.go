package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/micro"
)

func TestHealthz(t *testing.T) {
	// Nothing answers and no table: 503 naming every missing part.
	e := newEnv(t, envOpt{noTable: true, noFakes: true, cfg: Config{RequestTimeout: 300 * time.Millisecond}})
	status, m := e.doJSON(http.MethodGet, "/healthz", "")
	msg := errMessage(m)
	if status != 503 {
		t.Fatalf("healthz with nothing running: %d %v", status, m)
	}
	for _, part := range []string{"store:", "manager:", "table:"} {
		if !strings.Contains(msg, part) {
			t.Fatalf("healthz message %q does not name %s", msg, part)
		}
	}
	if checks, _ := m["checks"].(map[string]any); checks["nats"] != "ok" {
		t.Fatalf("checks = %v", m["checks"])
	}

	// The store alone is not enough.
	store := startStore(t, e.fnc, nil)
	_ = store
	status, m = e.doJSON(http.MethodGet, "/healthz", "")
	if msg = errMessage(m); status != 503 || strings.Contains(msg, "store:") || !strings.Contains(msg, "manager:") {
		t.Fatalf("healthz with the store only: %d %q", status, msg)
	}

	// Everything answers and a table arrives: 200.
	startManager(t, e.fnc)
	writeTable(t, e.fnc, twoNodeTable(2))
	waitFor(t, func() error {
		status, m := e.doJSON(http.MethodGet, "/healthz", "")
		if status != 200 {
			return errors.New(errMessage(m))
		}
		return nil
	})
}

var metricLine = regexp.MustCompile(`(?m)^(\S+?)(\{[^}]*\})? (\S+)$`)

// scrape returns every sample of /metrics as name{labels} -> value.
func scrape(t *testing.T, e *env) map[string]float64 {
	t.Helper()
	status, h, b := e.do(http.MethodGet, "/metrics", nil)
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", status, h.Get("Content-Type"))
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		if err == nil {
			out[m[1]+m[2]] = v
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOpt{})
	key := "metric-key"
	e.nodes.put(ownerOf(t, key), key, entry{data: pngBytes(10), ct: "image/png", version: 1})
	for range 3 {
		if status, _, _ := e.do(http.MethodGet, "/api/image/"+key, nil); status != 200 {
			t.Fatal("hit failed")
		}
	}
	e.do(http.MethodGet, "/api/image/unknown", nil) // miss, then 404 from the store
	e.do(http.MethodGet, "/api/nothing-here", nil)
	_ = e.nodes.svc.Stop()
	e.do(http.MethodGet, "/api/image/"+key, nil) // node gone: bus error, miss, 404 from the store

	s := scrape(t, e)
	for name, want := range map[string]float64{
		`cachepool_edge_cache_hits_total`:   3,
		`cachepool_edge_cache_misses_total`: 2,
		`cachepool_edge_http_requests_total{method="GET",route="/api/image/*key",status="200"}`:    3,
		`cachepool_edge_http_requests_total{method="GET",route="/api/image/*key",status="404"}`:    2,
		`cachepool_edge_http_requests_total{method="GET",route="unmatched",status="404"}`:          1,
		`cachepool_edge_http_request_duration_seconds_count{route="/api/image/*key",status="200"}`: 3,
		`cachepool_edge_bus_errors_total{code="503",op="node.get"}`:                                1,
	} {
		if got, found := s[name]; !found || got != want {
			t.Errorf("%s = %v (found %v), want %v", name, got, found, want)
		}
	}
	if _, found := s[`cachepool_edge_bus_errors_total{code="404",op="store.load"}`]; found {
		t.Error("a 404 from the store is counted as a bus error")
	}
}

// TestRecoverer: a panicking handler answers the 500 envelope.
func TestRecoverer(t *testing.T) {
	s := newServer(nil, Config{}.withDefaults(), bus.NewTableView(), testLogger())
	eng := s.engine()
	eng.GET("/boom", func(*gin.Context) { panic("kaboom") })
	rec := httptest.NewRecorder()
	eng.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom", nil))
	m := decodeEnvelope(t, rec.Code, rec.Body.Bytes())
	if rec.Code != 500 || strings.Contains(errMessage(m), "kaboom") {
		t.Fatalf("panic: %d %s", rec.Code, rec.Body)
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[int]int{400: 400, 401: 401, 404: 404, 409: 409, 413: 413, 415: 415, 500: 500, 503: 503, 504: 504, 0: 500, 200: 500, 302: 500, 600: 500, -1: 500} {
		if got := httpStatus(code); got != want {
			t.Errorf("httpStatus(%d) = %d, want %d", code, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	err := Config{Addr: "no-port", MaxImageBytes: -1, RequestTimeout: -time.Second}.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, part := range []string{"max image bytes", "request timeout", "addr"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not name %s", err, part)
		}
	}
	d := Config{}.withDefaults()
	if d.Addr != DefaultAddr || d.MaxImageBytes != 8<<20 || d.RequestTimeout != DefaultRequestTimeout {
		t.Fatalf("defaults: %+v", d)
	}
}

// TestRunStops: Run serves on Addr, finishes an in-flight request after
// cancel, and returns nil.
func TestRunStops(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nc, Config{Addr: addr}, testLogger()) }()
	waitFor(t, func() error {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errors.New(resp.Status)
		}
		return nil
	})
	// A slow list request is in flight when ctx is cancelled: it still gets its answer.
	arrived, release := make(chan struct{}), make(chan struct{})
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceStore, Version: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	if err := svc.AddEndpoint("list", micro.HandlerFunc(func(r micro.Request) {
		close(arrived)
		<-release
		_ = r.RespondJSON(contracts.ListKeysReply{Keys: []string{"k"}})
	}), micro.WithEndpointSubject(contracts.StoreList)); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/api/list_keys", "", nil)
		if err != nil {
			inflight <- 0
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-arrived
	cancel()
	waitFor(t, func() error { // Shutdown has closed the listener
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("still accepting connections")
	})
	close(release)
	if code := <-inflight; code != 200 {
		t.Fatalf("in-flight request during shutdown: status %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get("http://" + addr + "/"); err == nil {
		t.Fatal("the edge still answers after Run returned")
	}
	if !nc.IsConnected() {
		t.Fatal("Run closed the caller's connection")
	}

	// A bad config is refused before anything starts.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), nc, Config{Listener: ln2, MaxImageBytes: -1}, nil); err == nil {
		t.Fatal("Run accepted a bad config")
	}
	if _, err := ln2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run left its listener open after an early error: Accept = %v", err)
	}
}
