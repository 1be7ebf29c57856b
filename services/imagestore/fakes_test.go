package imagestore

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// fakeNode is a cache node reduced to what the store relies on: versioned
// entries where a put keeps the newer version, get, invalidate (at or
// below a version) and clear, on the real node subjects. It records every
// put it receives, in arrival order.
type fakeNode struct {
	id contracts.NodeID

	mu       sync.Mutex
	items    map[string]nodeEntry
	puts     []putRecord
	failPuts bool
	onPut    func(key string, version uint64) // called before the put is applied
}

type nodeEntry struct {
	data        []byte
	version     uint64
	contentType string
}

type putRecord struct {
	key     string
	version uint64
	stored  bool
}

func startFakeNode(t testing.TB, nc *nats.Conn, id contracts.NodeID) *fakeNode {
	t.Helper()
	n := &fakeNode{id: id, items: map[string]nodeEntry{}}
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceNode, Version: "0.0.0-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	add := func(name, subject string, h micro.HandlerFunc) {
		if err := svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)); err != nil {
			t.Fatal(err)
		}
	}
	add("put", contracts.NodePut(id), n.put)
	add("get", contracts.NodeGet(id), n.get)
	add("invalidate", contracts.NodeInvalidate(id), bus.JSON(context.Background(), 0, n.invalidate).Handle)
	add("clear", contracts.NodeClear(id), bus.JSON(context.Background(), 0, n.clear).Handle)
	return n
}

func (n *fakeNode) put(r micro.Request) {
	key := r.Headers().Get(contracts.HdrKey)
	v, err := strconv.ParseUint(r.Headers().Get(contracts.HdrVersion), 10, 64)
	if err != nil {
		bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "version: %v", err))
		return
	}
	n.mu.Lock()
	hook, fail := n.onPut, n.failPuts
	n.mu.Unlock()
	if hook != nil {
		hook(key, v)
	}
	if fail {
		bus.RespondError(r, contracts.Errorf(contracts.CodeUnavailable, "node %s refuses puts (test)", n.id))
		return
	}
	n.mu.Lock()
	cur, ok := n.items[key]
	stored := !ok || v >= cur.version
	if stored {
		n.items[key] = nodeEntry{data: append([]byte(nil), r.Data()...), version: v, contentType: r.Headers().Get(contracts.HdrContentType)}
		cur = n.items[key]
	}
	n.puts = append(n.puts, putRecord{key, v, stored})
	n.mu.Unlock()
	_ = r.RespondJSON(contracts.PutReply{Stored: stored, Version: cur.version})
}

func (n *fakeNode) get(r micro.Request) {
	n.mu.Lock()
	e, ok := n.items[string(r.Data())]
	n.mu.Unlock()
	if !ok {
		bus.RespondError(r, contracts.Errorf(contracts.CodeNotFound, "miss"))
		return
	}
	_ = r.Respond(e.data, micro.WithHeaders(micro.Headers{
		contracts.HdrVersion:     {strconv.FormatUint(e.version, 10)},
		contracts.HdrContentType: {e.contentType},
	}))
}

func (n *fakeNode) invalidate(_ context.Context, req contracts.InvalidateRequest) (contracts.InvalidateReply, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var rep contracts.InvalidateReply
	for _, k := range req.Keys {
		if e, ok := n.items[k]; ok && (req.BelowOrAt == 0 || e.version <= req.BelowOrAt) {
			delete(n.items, k)
			rep.Removed++
		}
	}
	return rep, nil
}

func (n *fakeNode) clear(context.Context, struct{}) (contracts.ClearReply, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rep := contracts.ClearReply{Items: int64(len(n.items))}
	for _, e := range n.items {
		rep.Bytes += int64(len(e.data))
	}
	n.items = map[string]nodeEntry{}
	return rep, nil
}

// entry returns the node's copy of key.
func (n *fakeNode) entry(key string) (nodeEntry, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.items[key]
	return e, ok
}

// seed stores an entry directly (as a migration copy would).
func (n *fakeNode) seed(key string, version uint64, data []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.items[key] = nodeEntry{data: data, version: version, contentType: "image/test"}
}

func (n *fakeNode) drop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.items = map[string]nodeEntry{}
}

func (n *fakeNode) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.items)
}

// putsOf returns the puts of key received so far.
func (n *fakeNode) putsOf(key string) []putRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []putRecord
	for _, p := range n.puts {
		if p.key == key {
			out = append(out, p)
		}
	}
	return out
}

func (n *fakeNode) setFailPuts(fail bool) {
	n.mu.Lock()
	n.failPuts = fail
	n.mu.Unlock()
}

func (n *fakeNode) setOnPut(f func(key string, version uint64)) {
	n.mu.Lock()
	n.onPut = f
	n.mu.Unlock()
}

// countingBlobs counts object reads and can hold them at a gate.
type countingBlobs struct {
	blob.Store
	gets atomic.Int64

	mu   sync.Mutex
	gate *readGate
}

// readGate holds reads: each read signals reached, then waits for release.
// With afterRead the bytes are read before waiting.
type readGate struct {
	afterRead bool
	reached   chan struct{}
	release   chan struct{}
}

func (c *countingBlobs) Get(ctx context.Context, name string) ([]byte, error) {
	c.gets.Add(1)
	c.mu.Lock()
	g := c.gate
	c.mu.Unlock()
	if g == nil {
		return c.Store.Get(ctx, name)
	}
	var data []byte
	var err error
	if g.afterRead {
		data, err = c.Store.Get(ctx, name)
	}
	select {
	case g.reached <- struct{}{}:
	default:
	}
	<-g.release
	if !g.afterRead {
		data, err = c.Store.Get(ctx, name)
	}
	return data, err
}

// hold installs a gate and returns it; every later read waits at it.
func (c *countingBlobs) hold(afterRead bool) *readGate {
	g := &readGate{afterRead: afterRead, reached: make(chan struct{}, 1), release: make(chan struct{})}
	c.mu.Lock()
	c.gate = g
	c.mu.Unlock()
	return g
}

// open removes the gate and releases every read held at it.
func (c *countingBlobs) open(g *readGate) {
	c.mu.Lock()
	c.gate = nil
	c.mu.Unlock()
	close(g.release)
}
