package cachenode_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

const waitFor = 10 * time.Second

// collector keeps every message of one subscription, decoded as T.
type collector[T any] struct {
	mu   sync.Mutex
	msgs []T
	errs []error
}

func collect[T any](t testing.TB, nc *nats.Conn, subject string) *collector[T] {
	t.Helper()
	c := &collector[T]{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var v T
		err := json.Unmarshal(m.Data, &v)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: %w", m.Subject, err))
			return
		}
		c.msgs = append(c.msgs, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *collector[T]) all() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]T(nil), c.msgs...)
}

func (c *collector[T]) check(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		t.Error(err)
	}
}

// running is a node started by start; stop cancels it and checks that Run
// returned nil.
type running struct {
	id     contracts.NodeID
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("Run(%s) returned %v, want nil", r.id, r.err)
		}
	case <-time.After(waitFor):
		t.Fatalf("Run(%s) did not return after cancel", r.id)
	}
}

// start runs a node on nc and waits for its announcement.
func start(t testing.TB, nc *nats.Conn, announced *collector[contracts.NodeAnnouncement], cfg cachenode.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{id: cfg.ID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = cachenode.Run(ctx, nc, cfg, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	bustest.Eventually(t, waitFor, func() error {
		for _, a := range announced.all() {
			if a.Node == cfg.ID {
				return nil
			}
		}
		select {
		case <-r.done:
			t.Fatalf("Run(%s) ended early: %v", cfg.ID, r.err)
		default:
		}
		return fmt.Errorf("no announcement from %s", cfg.ID)
	})
	return r
}

func put(t testing.TB, nc *nats.Conn, id contracts.NodeID, key string, version uint64, value []byte) contracts.PutReply {
	t.Helper()
	reply, err := putMsg(nc, id, map[string]string{
		contracts.HdrKey:         key,
		contracts.HdrVersion:     strconv.FormatUint(version, 10),
		contracts.HdrContentType: "image/png",
	}, value)
	if err != nil {
		t.Fatalf("put %s v%d on %s: %v", key, version, id, err)
	}
	return reply
}

func putMsg(nc *nats.Conn, id contracts.NodeID, headers map[string]string, value []byte) (contracts.PutReply, error) {
	msg := nats.NewMsg(contracts.NodePut(id))
	for k, v := range headers {
		msg.Header.Set(k, v)
	}
	msg.Data = value
	var out contracts.PutReply
	reply, err := bus.RequestMsg(context.Background(), nc, msg)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(reply.Data, &out)
}

func get(nc *nats.Conn, id contracts.NodeID, key string) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return bus.RequestMsg(ctx, nc, &nats.Msg{Subject: contracts.NodeGet(id), Data: []byte(key)})
}

func request[Resp any](t testing.TB, nc *nats.Conn, subject string, req any) Resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := bus.Request[Resp](ctx, nc, subject, req)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return resp
}

// wireCode returns the wire code of err (0 when err is nil or not a *contracts.Error).
func wireCode(err error) int {
	var ce *contracts.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func requestCode(nc *nats.Conn, subject string, body []byte) int {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: subject, Data: body})
	return wireCode(err)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  cachenode.Config
		ok   bool
	}{
		{"defaults", cachenode.Config{ID: "n1"}, true},
		{"full", cachenode.Config{ID: "node-2", CapacityMB: 0.5, Policy: "rr", ReportInterval: time.Second, HeartbeatInterval: time.Second}, true},
		{"no id", cachenode.Config{}, false},
		{"bad id", cachenode.Config{ID: "a.b"}, false},
		{"negative capacity", cachenode.Config{ID: "n1", CapacityMB: -1}, false},
		{"huge capacity", cachenode.Config{ID: "n1", CapacityMB: contracts.MaxCapacityMB + 1}, false},
		{"unknown policy", cachenode.Config{ID: "n1", Policy: "lfu"}, false},
		{"negative interval", cachenode.Config{ID: "n1", ReportInterval: -time.Second}, false},
		{"negative heartbeat", cachenode.Config{ID: "n1", HeartbeatInterval: -time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// Several problems are reported at once.
	err := cachenode.Config{ID: "a b", Policy: "x", HeartbeatInterval: -1}.Validate()
	for _, want := range []string{"id", "replacement_policy", "heartbeat"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	if err := cachenode.Run(context.Background(), nc, cachenode.Config{ID: "bad id"}, nil); err == nil {
		t.Fatal("Run accepted an invalid config")
	}
}

func TestNodeEndpoints(t *testing.T) {
	srv := bustest.RunServer(t)
	nodeConn := bustest.Connect(t, srv)
	nc := bustest.Connect(t, srv)
	announced := collect[contracts.NodeAnnouncement](t, nc, contracts.NodeAnnounce)
	const id = contracts.NodeID("ep-1")
	n := start(t, nodeConn, announced, cachenode.Config{ID: id, CapacityMB: 1, Policy: "lru"})

	// put and get
	if r := put(t, nc, id, "cat.png", 3, []byte("meow")); !r.Stored || r.Version != 3 {
		t.Fatalf("put: %+v", r)
	}
	msg, err := get(nc, id, "cat.png")
	if err != nil {
		t.Fatalf("get hit: %v", err)
	}
	if string(msg.Data) != "meow" || msg.Header.Get(contracts.HdrVersion) != "3" || msg.Header.Get(contracts.HdrContentType) != "image/png" {
		t.Fatalf("get hit: body %q headers %v", msg.Data, msg.Header)
	}

	// a miss is a *contracts.Error with code 404 through bus.RequestMsg
	_, err = get(nc, id, "dog.png")
	var ce *contracts.Error
	if !errors.As(err, &ce) || ce.Code != contracts.CodeNotFound {
		t.Fatalf("get miss: %v (%T), want a *contracts.Error with code 404", err, err)
	}
	if code := requestCode(nc, contracts.NodeGet(id), nil); code != contracts.CodeBadRequest {
		t.Fatalf("get of an empty key: code %d, want 400", code)
	}

	// the version rule over the wire
	if r := put(t, nc, id, "cat.png", 2, []byte("old")); r.Stored || r.Version != 3 || r.Reason == "" {
		t.Fatalf("older put: %+v", r)
	}
	if r := put(t, nc, id, "cat.png", 4, []byte("purr")); !r.Stored || r.Version != 4 {
		t.Fatalf("newer put: %+v", r)
	}

	// bad headers are 400
	for name, h := range map[string]map[string]string{
		"no key":      {contracts.HdrVersion: "1"},
		"bad key":     {contracts.HdrKey: "a/b", contracts.HdrVersion: "1"},
		"no version":  {contracts.HdrKey: "k"},
		"bad version": {contracts.HdrKey: "k", contracts.HdrVersion: "-1"},
		"text":        {contracts.HdrKey: "k", contracts.HdrVersion: "one"},
	} {
		if _, err := putMsg(nc, id, h, []byte("x")); wireCode(err) != contracts.CodeBadRequest {
			t.Errorf("put with %s: %v, want 400", name, err)
		}
	}

	// oversize: refused, nothing else evicted
	if r := put(t, nc, id, "huge.png", 1, make([]byte, 1<<20+1)); r.Stored || r.Reason == "" {
		t.Fatalf("oversize put: %+v", r)
	}
	if _, err := get(nc, id, "cat.png"); err != nil {
		t.Fatalf("oversize put flushed the node: %v", err)
	}

	// invalidate honours below_or_at
	put(t, nc, id, "a", 5, []byte("A"))
	put(t, nc, id, "b", 5, []byte("B"))
	inv := request[contracts.InvalidateReply](t, nc, contracts.NodeInvalidate(id), contracts.InvalidateRequest{Keys: []string{"a", "b", "zzz"}, BelowOrAt: 4})
	if inv.Removed != 0 {
		t.Fatalf("invalidate below 4 removed %d", inv.Removed)
	}
	inv = request[contracts.InvalidateReply](t, nc, contracts.NodeInvalidate(id), contracts.InvalidateRequest{Keys: []string{"a"}, BelowOrAt: 5})
	if inv.Removed != 1 {
		t.Fatalf("invalidate at 5 removed %d", inv.Removed)
	}
	if code := requestCode(nc, contracts.NodeInvalidate(id), []byte(`{"keys":[]}`)); code != contracts.CodeBadRequest {
		t.Fatalf("invalidate without keys: code %d", code)
	}

	// put_batch stores migration copies without counting them as puts
	before := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject(id), nil)
	batch := contracts.EncodeBatch([]contracts.Entry{
		{Key: "m1", Version: 1, ContentType: "image/jpeg", Value: []byte("one")},
		{Key: "b", Version: 4, Value: []byte("stale")}, // b holds 5
	})
	reply, err := bus.RequestMsg(context.Background(), nc, &nats.Msg{Subject: contracts.NodePutBatch(id), Data: batch})
	if err != nil {
		t.Fatal(err)
	}
	var pb contracts.PutBatchReply
	if err := json.Unmarshal(reply.Data, &pb); err != nil || pb.Stored != 1 || pb.Skipped != 1 {
		t.Fatalf("put_batch: %+v %v", pb, err)
	}
	if code := requestCode(nc, contracts.NodePutBatch(id), []byte("garbage")); code != contracts.CodeBadRequest {
		t.Fatalf("malformed put_batch: code %d", code)
	}
	after := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject(id), nil)
	if after.Counters.Puts != before.Counters.Puts || after.Items != before.Items+1 {
		t.Fatalf("put_batch: stats before %+v after %+v", before, after)
	}
	if m, err := get(nc, id, "m1"); err != nil || m.Header.Get(contracts.HdrContentType) != "image/jpeg" {
		t.Fatalf("get m1 after put_batch: %v", err)
	}

	// stats reflect the traffic: items cat.png, b, m1
	st := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject(id), nil)
	if st.Node != id || st.Items != 3 || st.Config.CapacityMB != 1 || st.Config.Policy != "lru" || st.StartedAt.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
	if st.Counters.Gets != st.Counters.Hits+st.Counters.Misses || st.Counters.Misses != 1 || st.Counters.Puts != 6 {
		t.Fatalf("stats counters: %+v", st.Counters)
	}

	// config: invalid → 400 and unchanged; valid → applied live, smaller capacity evicts at once
	for _, body := range []string{`{"capacity":0,"replacement_policy":"lru"}`, `{"capacity":1,"replacement_policy":"lfu"}`, `{"capacity":"1"}`, `{"capacity":1,"replacement_policy":"lru","x":1}`} {
		if code := requestCode(nc, contracts.NodeConfigure(id), []byte(body)); code != contracts.CodeBadRequest {
			t.Errorf("config %s: code %d, want 400", body, code)
		}
	}
	for i := range 8 {
		put(t, nc, id, fmt.Sprintf("big-%d", i), 1, make([]byte, 100_000))
	}
	cfgd := request[contracts.NodeStats](t, nc, contracts.NodeConfigure(id), contracts.CacheConfig{CapacityMB: 0.25, Policy: "rr"})
	if cfgd.Config.Policy != "random" || cfgd.Config.CapacityMB != 0.25 || cfgd.Bytes > 1<<18 || cfgd.Counters.Evictions == 0 {
		t.Fatalf("config applied: %+v", cfgd)
	}

	// clear reports what it removed
	cl := request[contracts.ClearReply](t, nc, contracts.NodeClear(id), nil)
	if cl.Items != cfgd.Items || cl.Bytes != cfgd.Bytes || cl.Items == 0 {
		t.Fatalf("clear: %+v after %+v", cl, cfgd)
	}
	if st := request[contracts.NodeStats](t, nc, contracts.NodeStatsSubject(id), nil); st.Items != 0 || st.Bytes != 0 {
		t.Fatalf("stats after clear: %+v", st)
	}

	// drop validates its partitions
	if code := requestCode(nc, contracts.NodeDrop(id), []byte(`{"partitions":[16],"partition_count":16}`)); code != contracts.CodeBadRequest {
		t.Fatalf("drop out of range: code %d", code)
	}
	if code := requestCode(nc, contracts.NodeDrop(id), []byte(`{"partitions":[1],"partition_count":3}`)); code != contracts.CodeBadRequest {
		t.Fatalf("drop with a bad count: code %d", code)
	}

	// the node is listed by the micro framework (what `nats micro ls` shows)
	info := microInfo(t, nc)
	if info.Metadata["node"] != string(id) || len(info.Endpoints) != 9 {
		t.Fatalf("micro info: %+v", info)
	}
	n.stop(t)
	if code := requestCode(nc, contracts.NodeGet(id), []byte("cat.png")); code != contracts.CodeUnavailable {
		t.Fatalf("get after stop: code %d, want 503", code)
	}
}

func microInfo(t *testing.T, nc *nats.Conn) micro.Info {
	t.Helper()
	subj, err := micro.ControlSubject(micro.InfoVerb, contracts.ServiceNode, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subj, nil, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
