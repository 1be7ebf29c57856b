package imagestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testPartitions keeps tables small in tests.
const testPartitions = 16

// env is one embedded NATS server with fake cache nodes and the partition
// table in its KV bucket, as the manager would write it.
type env struct {
	t     testing.TB
	srv   *server.Server
	nc    *nats.Conn
	kv    jetstream.KeyValue
	nodes map[contracts.NodeID]*fakeNode
	table contracts.PartitionTable
}

func newEnv(t testing.TB, ids ...contracts.NodeID) *env {
	t.Helper()
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureKV(context.Background(), js, bus.PoolBucketConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, nc: nc, kv: kv, nodes: map[contracts.NodeID]*fakeNode{}}
	for _, id := range ids {
		e.nodes[id] = startFakeNode(t, bustest.Connect(t, srv), id)
	}
	if len(ids) > 0 {
		e.setTable(roundRobin(1, ids))
	}
	return e
}

// roundRobin assigns partition p to ids[p % len(ids)].
func roundRobin(epoch uint64, ids []contracts.NodeID) contracts.PartitionTable {
	t := contracts.PartitionTable{Epoch: epoch, Partitions: testPartitions, Nodes: ids, UpdatedAt: time.Now().UTC()}
	for p := range testPartitions {
		t.Owners = append(t.Owners, ids[p%len(ids)])
	}
	return t
}

func (e *env) setTable(t contracts.PartitionTable) {
	e.t.Helper()
	if err := t.Validate(); err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(t)
	if _, err := e.kv.Put(context.Background(), contracts.KeyTable, b); err != nil {
		e.t.Fatal(err)
	}
	e.table = t
}

// owner returns the fake node owning key in the current table.
func (e *env) owner(key string) *fakeNode {
	id, _, err := e.table.Owner(key)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.nodes[id]
}

// other returns a node that does not own key.
func (e *env) other(key string) *fakeNode {
	for id, n := range e.nodes {
		if o, _, _ := e.table.Owner(key); o != id {
			return n
		}
	}
	e.t.Fatal("no other node")
	return nil
}

// instance is one running store with its own connection.
type instance struct {
	s     *service
	blobs *countingBlobs
	meta  *meta.Store
	dir   string
}

func testLogger() *slog.Logger {
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs a store on the file blob store and SQLite in dir (several
// instances may share one dir, as they would share a database and bucket).
// It waits until the instance sees the current table and answers; at
// cleanup it cancels and requires a nil return.
func (e *env) start(cfg Config, dir string) *instance {
	e.t.Helper()
	fs, err := blob.OpenFile(filepath.Join(dir, "blobs"))
	if err != nil {
		e.t.Fatal(err)
	}
	db, err := meta.Open(context.Background(), "sqlite", dir)
	if err != nil {
		e.t.Fatal(err)
	}
	inst := &instance{blobs: &countingBlobs{Store: fs}, meta: db, dir: dir}
	cfg.DataDir = dir
	e.serve(inst, cfg)
	return inst
}

func (e *env) serve(inst *instance, cfg Config) {
	e.t.Helper()
	nc := bustest.Connect(e.t, e.srv)
	inst.s = newService(nc, cfg, testLogger(), inst.blobs, inst.meta)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inst.s.serve(ctx, nc) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("serve returned %v after cancel, want nil", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Error("serve did not return after cancel")
		}
		_ = inst.blobs.Close()
		_ = inst.meta.Close()
	})
	bustest.Eventually(e.t, 10*time.Second, func() error {
		if cur := inst.s.table.Current(); e.table.Epoch != 0 && (cur == nil || cur.Epoch != e.table.Epoch) {
			return errors.New("instance has not seen the table yet")
		}
		_, err := bus.Request[contracts.ListKeysReply](context.Background(), e.nc, contracts.StoreList, nil)
		return err
	})
}

// waitTable waits until inst sees epoch.
func (e *env) waitTable(inst *instance, epoch uint64) {
	e.t.Helper()
	bustest.Eventually(e.t, 5*time.Second, func() error {
		if cur := inst.s.table.Current(); cur == nil || cur.Epoch != epoch {
			return fmt.Errorf("instance at epoch %v, want %d", cur, epoch)
		}
		return nil
	})
}

func reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// put uploads through the bus, as the edge does.
func (e *env) put(key, contentType string, data []byte) (contracts.StorePutReply, error) {
	return putOn(e.nc, key, contentType, data)
}

func putOn(nc *nats.Conn, key, contentType string, data []byte) (contracts.StorePutReply, error) {
	ctx, cancel := reqCtx()
	defer cancel()
	msg := nats.NewMsg(contracts.StorePut)
	msg.Header.Set(contracts.HdrKey, key)
	if contentType != "" {
		msg.Header.Set(contracts.HdrContentType, contentType)
	}
	msg.Data = data
	var rep contracts.StorePutReply
	reply, err := bus.RequestMsg(ctx, nc, msg)
	if err != nil {
		return rep, err
	}
	return rep, json.Unmarshal(reply.Data, &rep)
}

func (e *env) mustPut(key string, data []byte) contracts.StorePutReply {
	e.t.Helper()
	rep, err := e.put(key, "image/png", data)
	if err != nil {
		e.t.Fatalf("put %q: %v", key, err)
	}
	return rep
}

// loaded is a load's answer.
type loaded struct {
	data        []byte
	version     uint64
	contentType string
}

func (e *env) load(key string) (loaded, error) {
	ctx, cancel := reqCtx()
	defer cancel()
	reply, err := bus.RequestMsg(ctx, e.nc, &nats.Msg{Subject: contracts.StoreLoad, Data: []byte(key)})
	if err != nil {
		return loaded{}, err
	}
	v, err := strconv.ParseUint(reply.Header.Get(contracts.HdrVersion), 10, 64)
	if err != nil {
		return loaded{}, fmt.Errorf("version header: %w", err)
	}
	return loaded{reply.Data, v, reply.Header.Get(contracts.HdrContentType)}, nil
}

// codeOf returns the wire code of err (0 for nil or a non-wire error).
func codeOf(err error) int {
	var ce *contracts.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}
