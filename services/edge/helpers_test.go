package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// pngBytes returns n bytes that sniff as image/png.
func pngBytes(n int) []byte {
	b := bytes.Repeat([]byte{0x42}, n)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
}

func testLogger() *slog.Logger {
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// writeTable stores t in KV as the manager would.
func writeTable(t testing.TB, nc *nats.Conn, table contracts.PartitionTable) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := bus.EnsureKV(ctx, js, bus.PoolBucketConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(table)
	if _, err := kv.Put(ctx, contracts.KeyTable, b); err != nil {
		t.Fatal(err)
	}
}

// twoNodeTable assigns 16 partitions alternately to n1 and n2.
func twoNodeTable(epoch uint64) contracts.PartitionTable {
	t := contracts.PartitionTable{Epoch: epoch, Partitions: 16, Nodes: []contracts.NodeID{"n1", "n2"}, UpdatedAt: time.Now().UTC()}
	for p := range 16 {
		t.Owners = append(t.Owners, t.Nodes[p%2])
	}
	return t
}

// startEdge runs Run on a loopback listener and returns its base URL. At
// cleanup it cancels Run and checks that it returned nil.
func startEdge(t testing.TB, nc *nats.Conn, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nc, cfg, testLogger()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return within 20s of cancel")
		}
	})
	base := "http://" + ln.Addr().String()
	// Run listens only after the table watch is set up: wait until it answers.
	bustest.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return nil
	})
	return base
}

// env is one test's bus, fakes and edge.
type env struct {
	t     testing.TB
	srv   *natsserver.Server
	nc    *nats.Conn // the edge's connection
	fnc   *nats.Conn // the fakes' connection
	base  string
	nodes *fakeNodes
	store *fakeStore
	mgr   *fakeManager
}

type envOpt struct {
	cfg       Config
	noTable   bool
	noFakes   bool
	noStore   bool
	noManager bool
}

func newEnv(t testing.TB, o envOpt) *env {
	t.Helper()
	srv := bustest.RunServer(t)
	e := &env{t: t, srv: srv, nc: bustest.Connect(t, srv), fnc: bustest.Connect(t, srv)}
	if !o.noTable {
		writeTable(t, e.fnc, twoNodeTable(1))
	}
	if !o.noFakes {
		e.nodes = startNodes(t, e.fnc, "n1", "n2")
		if !o.noStore {
			e.store = startStore(t, e.fnc, e.nodes)
		}
		if !o.noManager {
			e.mgr = startManager(t, e.fnc)
		}
	}
	e.base = startEdge(t, e.nc, o.cfg)
	return e
}

// do sends a request and returns the status, headers and body.
func (e *env) do(method, path string, body io.Reader, header ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// doJSON is do with a JSON (or raw string) body.
func (e *env) doJSON(method, path, body string, header ...string) (int, map[string]any) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = bytes.NewBufferString(body)
	}
	status, _, b := e.do(method, path, r, append([]string{"Content-Type", "application/json"}, header...)...)
	return status, decodeEnvelope(e.t, status, b)
}

// decodeEnvelope decodes an answer and checks the envelope's invariants:
// success is "true" on 2xx; otherwise "false" with error.code == status and a message.
func decodeEnvelope(t testing.TB, status int, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer (status %d) is not JSON: %v: %q", status, err, b)
	}
	if status < 300 {
		if m["success"] != "true" {
			t.Fatalf("status %d with success=%v: %s", status, m["success"], b)
		}
		return m
	}
	if m["success"] != "false" {
		t.Fatalf("status %d with success=%v: %s", status, m["success"], b)
	}
	eb, _ := m["error"].(map[string]any)
	if eb == nil {
		t.Fatalf("status %d without error member: %s", status, b)
	}
	if code, _ := eb["code"].(float64); int(code) != status {
		t.Fatalf("error.code %v != HTTP status %d: %s", eb["code"], status, b)
	}
	if msg, _ := eb["message"].(string); msg == "" {
		t.Fatalf("status %d without a message: %s", status, b)
	}
	return m
}

func errMessage(m map[string]any) string {
	eb, _ := m["error"].(map[string]any)
	s, _ := eb["message"].(string)
	return s
}

// multipartBody builds an upload body. A nil key or file leaves the field out.
func multipartBody(key *string, file []byte, fileCT string) (io.Reader, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if key != nil {
		_ = w.WriteField("key", *key)
	}
	if file != nil {
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="file"; filename="x.png"`}
		if fileCT != "" {
			h["Content-Type"] = []string{fileCT}
		}
		pw, _ := w.CreatePart(h)
		_, _ = pw.Write(file)
	}
	_ = w.Close()
	return &buf, w.FormDataContentType()
}

func strp(s string) *string { return &s }

// ---- fake cache nodes ----

type entry struct {
	data    []byte
	ct      string
	version uint64
}

type fakeNodes struct {
	mu      sync.Mutex
	entries map[contracts.NodeID]map[string]entry
	gets    map[contracts.NodeID]*atomic.Int64
	svc     micro.Service
}

// flushed makes sure the server has every subscription of nc before a
// test sends requests from another connection.
func flushed(t testing.TB, nc *nats.Conn) {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func startNodes(t testing.TB, nc *nats.Conn, ids ...contracts.NodeID) *fakeNodes {
	t.Helper()
	defer flushed(t, nc)
	f := &fakeNodes{entries: map[contracts.NodeID]map[string]entry{}, gets: map[contracts.NodeID]*atomic.Int64{}}
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceNode, Version: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	f.svc = svc
	for _, id := range ids {
		f.entries[id] = map[string]entry{}
		f.gets[id] = &atomic.Int64{}
		err := svc.AddEndpoint("get-"+string(id), micro.HandlerFunc(func(r micro.Request) {
			f.gets[id].Add(1)
			f.mu.Lock()
			en, ok := f.entries[id][string(r.Data())]
			f.mu.Unlock()
			if !ok {
				_ = r.Error("404", "not cached", nil)
				return
			}
			_ = r.Respond(en.data, micro.WithHeaders(micro.Headers{
				contracts.HdrContentType: {en.ct}, contracts.HdrVersion: {strconv.FormatUint(en.version, 10)},
			}))
		}), micro.WithEndpointSubject(contracts.NodeGet(id)))
		if err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeNodes) put(id contracts.NodeID, key string, en entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries[id][key] = en
}

func (f *fakeNodes) totalGets() int64 {
	var n int64
	for _, g := range f.gets {
		n += g.Load()
	}
	return n
}

// ---- fake key-image store ----

type fakeStore struct {
	mu     sync.Mutex
	blobs  map[string]entry
	puts   atomic.Int64
	loads  atomic.Int64
	clears atomic.Int64
}

func startStore(t testing.TB, nc *nats.Conn, nodes *fakeNodes) *fakeStore {
	t.Helper()
	defer flushed(t, nc)
	f := &fakeStore{blobs: map[string]entry{}}
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceStore, Version: "0.1.0", QueueGroup: contracts.QueueStore})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	add := func(name, subject string, h micro.HandlerFunc) {
		if err := svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)); err != nil {
			t.Fatal(err)
		}
	}
	add("put", contracts.StorePut, func(r micro.Request) {
		f.puts.Add(1)
		key := r.Headers().Get(contracts.HdrKey)
		f.mu.Lock()
		v := f.blobs[key].version + 1
		f.blobs[key] = entry{data: bytes.Clone(r.Data()), ct: r.Headers().Get(contracts.HdrContentType), version: v}
		f.mu.Unlock()
		_ = r.RespondJSON(contracts.StorePutReply{Key: key, Version: v, Bytes: int64(len(r.Data()))})
	})
	add("load", contracts.StoreLoad, func(r micro.Request) {
		f.loads.Add(1)
		f.mu.Lock()
		en, ok := f.blobs[string(r.Data())]
		f.mu.Unlock()
		if !ok {
			_ = r.Error("404", fmt.Sprintf("no image under key %q", r.Data()), nil)
			return
		}
		_ = r.Respond(en.data, micro.WithHeaders(micro.Headers{
			contracts.HdrContentType: {en.ct}, contracts.HdrVersion: {strconv.FormatUint(en.version, 10)},
		}))
	})
	add("list", contracts.StoreList, func(r micro.Request) {
		f.mu.Lock()
		keys := make([]string, 0, len(f.blobs))
		for k := range f.blobs {
			keys = append(keys, k)
		}
		f.mu.Unlock()
		_ = r.RespondJSON(contracts.ListKeysReply{Keys: keys})
	})
	add("clear_all", contracts.StoreClearAll, func(r micro.Request) {
		f.clears.Add(1)
		f.mu.Lock()
		n := int64(len(f.blobs))
		f.blobs = map[string]entry{}
		f.mu.Unlock()
		_ = r.RespondJSON(contracts.ClearAllReply{Rows: n, Objects: n, CachedItems: 7})
	})
	return f
}

func (f *fakeStore) get(key string) (entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	en, ok := f.blobs[key]
	return en, ok
}

// ---- fake manager ----

// fakeManager is a small stateful manager: it keeps mode, parameters, cache
// config and size, applies resizes at once within 1..maxNodes when asked to
// wait (or leaves them queued when hold is set), and counts every request.
type fakeManager struct {
	mu       sync.Mutex
	mode     contracts.ModeConfig
	cache    contracts.CacheConfig
	size     int
	maxNodes int
	hold     bool // resizes stay queued
	requests map[string]contracts.ResizeRequestState
	calls    map[string]int // per endpoint name
	lastBody map[string][]byte
}

func startManager(t testing.TB, nc *nats.Conn) *fakeManager {
	t.Helper()
	defer flushed(t, nc)
	f := &fakeManager{
		mode:     contracts.ModeConfig{Mode: contracts.ModeManual, Params: contracts.DefaultAutoParams},
		cache:    contracts.CacheConfig{CapacityMB: 64, Policy: contracts.PolicyLRU},
		size:     2,
		maxNodes: 3,
		requests: map[string]contracts.ResizeRequestState{},
		calls:    map[string]int{},
		lastBody: map[string][]byte{},
	}
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceManager, Version: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	ctx := context.Background()
	add := func(name, subject string, h micro.Handler) {
		counted := micro.HandlerFunc(func(r micro.Request) {
			f.mu.Lock()
			f.calls[name]++
			f.lastBody[name] = bytes.Clone(r.Data())
			f.mu.Unlock()
			h.Handle(r)
		})
		if err := svc.AddEndpoint(name, counted, micro.WithEndpointSubject(subject)); err != nil {
			t.Fatal(err)
		}
	}
	add("status", contracts.PoolStatusSubject, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.PoolStatus, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		st := contracts.PoolStatus{Size: f.size, Target: f.size, MaxNodes: f.maxNodes, Mode: f.mode, Config: f.cache, Epoch: 1, Partitions: 16}
		for i := range f.size {
			st.Nodes = append(st.Nodes, contracts.NodeInfo{ID: contracts.NodeID(fmt.Sprintf("n%d", i+1)), State: contracts.NodeActive, Partitions: 16 / f.size})
		}
		return st, nil
	}))
	add("resize", contracts.PoolResize, bus.JSON(ctx, 0, func(_ context.Context, req contracts.ResizeRequest) (contracts.ResizeRequestState, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		id := fmt.Sprintf("r%d", len(f.requests)+1)
		st := contracts.ResizeRequestState{RequestID: id, Status: contracts.StateQueued, FromSize: f.size,
			Command: contracts.ResizeCommand{RequestID: id, Target: req.Target, Source: req.Source}}
		if req.WaitMS > 0 && !f.hold {
			to := req.Target
			switch req.Change {
			case "increase":
				to = f.size + 1
			case "decrease":
				to = f.size - 1
			}
			if to < 1 || to > f.maxNodes {
				st.Status, st.Reason = contracts.StateRejected, fmt.Sprintf("pool size %d is outside 1..%d", to, f.maxNodes)
			} else {
				st.Status, st.ToSize, f.size = contracts.StateApplied, to, to
				f.mode.Mode = contracts.ModeManual
			}
		}
		f.requests[id] = st
		return st, nil
	}))
	add("request", contracts.PoolRequest, bus.JSON(ctx, 0, func(_ context.Context, req contracts.RequestLookup) (contracts.ResizeRequestState, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		st, ok := f.requests[req.RequestID]
		if !ok {
			return st, contracts.Errorf(contracts.CodeNotFound, "no resize request %q", req.RequestID)
		}
		return st, nil
	}))
	add("requests", contracts.PoolRequests, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.ResizeRequestList, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var l contracts.ResizeRequestList
		for _, st := range f.requests {
			l.Requests = append(l.Requests, st)
		}
		return l, nil
	}))
	add("set_auto", contracts.PoolSetAuto, bus.JSON(ctx, 0, func(_ context.Context, p contracts.AutoParams) (contracts.ModeConfig, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.mode = contracts.ModeConfig{Mode: contracts.ModeAutomatic, Params: p}
		return f.mode, nil
	}))
	add("set_mode", contracts.PoolSetMode, bus.JSON(ctx, 0, func(_ context.Context, r contracts.SetModeRequest) (contracts.ModeConfig, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.mode.Mode = r.Mode
		return f.mode, nil
	}))
	add("mode", contracts.PoolMode, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.ModeConfig, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.mode, nil
	}))
	add("cache_config", contracts.PoolGetCacheConfig, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.CacheConfig, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.cache, nil
	}))
	add("set_cache_config", contracts.PoolSetCacheConfig, bus.JSON(ctx, 0, func(_ context.Context, c contracts.CacheConfig) (contracts.CacheConfig, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		c.Policy = contracts.NormalizePolicy(c.Policy)
		f.cache = c
		return c, nil
	}))
	add("clear_cache", contracts.PoolClearCache, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.ClearReply, error) {
		return contracts.ClearReply{Items: 3, Bytes: 300, Nodes: 2}, nil
	}))
	add("clear_data", contracts.PoolClearData, bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.ClearAllReply, error) {
		return contracts.ClearAllReply{Rows: 4, Objects: 4, CachedItems: 2}, nil
	}))
	return f
}

func (f *fakeManager) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

// mutations is the number of calls that could change the manager's state.
func (f *fakeManager) mutations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls["resize"] + f.calls["set_auto"] + f.calls["set_mode"] + f.calls["set_cache_config"] + f.calls["clear_cache"] + f.calls["clear_data"]
}

func (f *fakeManager) body(name string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastBody[name]
}

// waitFor polls f until it returns nil (10s at most).
func waitFor(t testing.TB, f func() error) {
	t.Helper()
	bustest.Eventually(t, 10*time.Second, f)
}

// startStats runs a fake stats service: the last minute's miss rate is
// missRate; the series has two points.
func startStats(t testing.TB, nc *nats.Conn, missRate float64) {
	t.Helper()
	defer flushed(t, nc)
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceStats, Version: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	ctx := context.Background()
	if err := svc.AddEndpoint("rate", bus.JSON(ctx, 0, func(_ context.Context, r contracts.RateRequest) (contracts.RateReply, error) {
		v := missRate
		if r.Rate == "hit" {
			v = 1 - missRate
		}
		return contracts.RateReply{Rate: r.Rate, Value: &v}, nil
	}), micro.WithEndpointSubject(contracts.StatsRate)); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddEndpoint("series", bus.JSON(ctx, 0, func(context.Context, struct{}) (contracts.StatsSeries, error) {
		hr := 1 - missRate
		t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		return contracts.StatsSeries{
			BucketMS: 60000, MissRate: []*float64{nil, &missRate}, HitRate: []*float64{nil, &hr},
			Items: []int64{0, 5}, Bytes: []int64{0, 500}, RequestsPerMinute: []float64{0, 12}, Nodes: []int{1, 2},
			Timestamps: []time.Time{t0, t0.Add(time.Minute)},
		}, nil
	}), micro.WithEndpointSubject(contracts.StatsSeriesSubject)); err != nil {
		t.Fatal(err)
	}
}
