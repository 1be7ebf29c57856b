package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// env is one component-test setup: an embedded server, the manager's
// connection, a client connection, and a fake launcher on its own connection.
type env struct {
	t        testing.TB
	srv      *server.Server
	nc       *nats.Conn
	client   *nats.Conn
	launcher *fakeLauncher
	cfg      Config
	stop     func()
}

const testHeartbeat = time.Second

func newEnv(t testing.TB, mutate func(*Config)) *env {
	t.Helper()
	srv := bustest.RunServer(t)
	e := &env{t: t, srv: srv, nc: bustest.Connect(t, srv), client: bustest.Connect(t, srv)}
	e.launcher = newFakeLauncher(bustest.Connect(t, srv), testHeartbeat)
	t.Cleanup(e.launcher.stopAll)
	e.cfg = Config{
		Partitions:     64,
		MaxNodes:       4,
		InitialNodes:   1,
		Heartbeat:      testHeartbeat,
		Provisioner:    ProvisionerLocal,
		Launcher:       e.launcher,
		StartTimeout:   5 * time.Second,
		HandoffTimeout: 10 * time.Second,
	}
	if mutate != nil {
		mutate(&e.cfg)
	}
	return e
}

// start runs the manager and waits until its micro service answers.
func (e *env) start() {
	e.stop = runManager(e.t, e.nc, e.cfg)
	bustest.Eventually(e.t, 20*time.Second, func() error {
		_, err := call[contracts.ModeConfig](e.t, e.client, contracts.PoolMode, nil)
		return err
	})
}

// call sends a request to the manager and decodes the reply.
func call[Resp any](t testing.TB, nc *nats.Conn, subject string, req any) (Resp, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return bus.Request[Resp](ctx, nc, subject, req)
}

// raw sends body as is and returns the wire error, if any.
func raw(t testing.TB, nc *nats.Conn, subject, body string) *contracts.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: subject, Data: []byte(body)})
	if err == nil {
		return nil
	}
	return bus.AsWire(err)
}

func (e *env) kv() (jetstream.KeyValue, error) {
	js, err := jetstream.New(e.client)
	if err != nil {
		return nil, err
	}
	return js.KeyValue(context.Background(), contracts.BucketPool)
}

func readJSON[T any](e *env, key string) (T, error) {
	var v T
	kv, err := e.kv()
	if err != nil {
		return v, err
	}
	ent, err := kv.Get(context.Background(), key)
	if err != nil {
		return v, fmt.Errorf("read %s: %w", key, err)
	}
	return v, json.Unmarshal(ent.Value(), &v)
}

func (e *env) table() contracts.PartitionTable {
	e.t.Helper()
	tbl, err := readJSON[contracts.PartitionTable](e, contracts.KeyTable)
	if err != nil {
		e.t.Fatal(err)
	}
	return tbl
}

func (e *env) state() poolRecord {
	e.t.Helper()
	st, err := readJSON[poolRecord](e, contracts.KeyState)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// settled fails until the table has n nodes, no migration, n balanced
// owners, the launcher runs exactly the table's nodes, and nothing is
// launching or leaving.
func (e *env) settled(n int) func() error {
	return func() error {
		tbl, err := readJSON[contracts.PartitionTable](e, contracts.KeyTable)
		if err != nil {
			return err
		}
		st, err := readJSON[poolRecord](e, contracts.KeyState)
		if err != nil {
			return err
		}
		switch {
		case len(tbl.Nodes) != n:
			return fmt.Errorf("table has %d nodes %v, want %d", len(tbl.Nodes), tbl.Nodes, n)
		case len(tbl.Previous) != 0:
			return fmt.Errorf("migration still running at epoch %d", tbl.Epoch)
		case len(st.Launching)+len(st.Leaving) != 0 || st.Current != nil:
			return fmt.Errorf("pool busy: launching %v leaving %v current %v", st.Launching, st.Leaving, st.Current)
		}
		load := Load(tbl.Owners)
		for _, id := range tbl.Nodes {
			if c := load[id]; c < tbl.Partitions/n || c > (tbl.Partitions+n-1)/n {
				return fmt.Errorf("%s holds %d partitions", id, c)
			}
		}
		if e.cfg.Provisioner != ProvisionerStandby {
			nodes := slices.Clone(tbl.Nodes)
			slices.SortFunc(nodes, compareIDs)
			if running := e.launcher.running(); !slices.Equal(running, nodes) {
				return fmt.Errorf("running %v, table %v", running, nodes)
			}
		}
		return nil
	}
}

// resize queues a resize and waits for its terminal state.
func (e *env) resize(req contracts.ResizeRequest) contracts.ResizeRequestState {
	e.t.Helper()
	if req.WaitMS == 0 {
		req.WaitMS = 30000
	}
	rec, err := call[contracts.ResizeRequestState](e.t, e.client, contracts.PoolResize, req)
	if err != nil {
		e.t.Fatalf("resize %+v: %v", req, err)
	}
	if !contracts.Terminal(rec.Status) {
		e.t.Fatalf("resize %+v not terminal after the wait: %+v", req, rec)
	}
	return rec
}

// collector gathers JSON events of one subject.
type collector[T any] struct {
	mu  sync.Mutex
	got []T
}

func collect[T any](t *testing.T, nc *nats.Conn, subject string) *collector[T] {
	t.Helper()
	c := &collector[T]{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var v T
		if json.Unmarshal(m.Data, &v) == nil {
			c.mu.Lock()
			c.got = append(c.got, v)
			c.mu.Unlock()
		}
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
	return slices.Clone(c.got)
}
