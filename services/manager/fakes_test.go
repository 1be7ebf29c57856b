package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// fakeNode is a small in-memory cache node for component tests: it answers
// the node subjects the manager uses (stats, config, handoff, put_batch,
// drop, clear), heartbeats, and announces itself. It is not
// services/cachenode; it does just enough, the same way.
type fakeNode struct {
	id      contracts.NodeID
	nc      *nats.Conn
	standby bool

	mu         sync.Mutex
	entries    map[string]contracts.Entry
	cfg        contracts.CacheConfig
	configured []contracts.CacheConfig
	clears     int
	subs       []*nats.Subscription
	stop       chan struct{}
	done       chan struct{}
	alive      bool
	// onHandoff, when set, runs before a handoff is served.
	onHandoff func()
}

func respondJSON(m *nats.Msg, v any) {
	b, _ := json.Marshal(v)
	_ = m.Respond(b)
}

// startFakeNode subscribes the node's subjects, starts heartbeats every hb
// and announces readiness.
func startFakeNode(nc *nats.Conn, id contracts.NodeID, hb time.Duration, standby bool) (*fakeNode, error) {
	n := &fakeNode{id: id, nc: nc, standby: standby, entries: map[string]contracts.Entry{}, stop: make(chan struct{}), done: make(chan struct{}), alive: true}
	handlers := map[string]nats.MsgHandler{
		contracts.NodeStatsSubject(id): func(m *nats.Msg) { respondJSON(m, n.stats()) },
		contracts.NodeConfigure(id): func(m *nats.Msg) {
			var c contracts.CacheConfig
			if json.Unmarshal(m.Data, &c) != nil {
				return
			}
			n.mu.Lock()
			n.cfg = c
			n.configured = append(n.configured, c)
			n.mu.Unlock()
			respondJSON(m, n.stats())
		},
		contracts.NodeHandoff(id):  n.handoff,
		contracts.NodePutBatch(id): n.putBatch,
		contracts.NodeDrop(id): func(m *nats.Msg) {
			var r contracts.DropRequest
			if json.Unmarshal(m.Data, &r) != nil {
				return
			}
			items, bytes := n.remove(r.Partitions, r.PartitionCount, nil)
			respondJSON(m, contracts.DropReply{Items: items, Bytes: bytes})
		},
		contracts.NodeClear(id): func(m *nats.Msg) {
			n.mu.Lock()
			var r contracts.ClearReply
			for _, e := range n.entries {
				r.Items++
				r.Bytes += e.Size()
			}
			n.entries = map[string]contracts.Entry{}
			n.clears++
			n.mu.Unlock()
			respondJSON(m, r)
		},
	}
	for subject, h := range handlers {
		s, err := nc.Subscribe(subject, h)
		if err != nil {
			return nil, err
		}
		n.subs = append(n.subs, s)
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	go n.heartbeat(hb)
	b, _ := json.Marshal(contracts.NodeAnnouncement{EventID: newID(), OccurredAt: time.Now().UTC(), Node: id, Incarnation: "test", Standby: standby})
	return n, nc.Publish(contracts.NodeAnnounce, b)
}

func (n *fakeNode) heartbeat(every time.Duration) {
	defer close(n.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		b, _ := json.Marshal(contracts.Heartbeat{Node: n.id, Incarnation: "test", OccurredAt: time.Now().UTC()})
		_ = n.nc.Publish(contracts.NodeHeartbeat(n.id), b)
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// crash stops answering and heartbeating, like a killed process.
func (n *fakeNode) crash() {
	n.mu.Lock()
	if !n.alive {
		n.mu.Unlock()
		return
	}
	n.alive = false
	n.mu.Unlock()
	for _, s := range n.subs {
		_ = s.Unsubscribe()
	}
	close(n.stop)
	<-n.done
}

// stopClean crashes and then announces a clean stop.
func (n *fakeNode) stopClean() {
	n.crash()
	b, _ := json.Marshal(contracts.NodeAnnouncement{EventID: newID(), OccurredAt: time.Now().UTC(), Node: n.id, Incarnation: "test"})
	_ = n.nc.Publish(contracts.NodeGone, b)
}

func (n *fakeNode) stats() contracts.NodeStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := contracts.NodeStats{Node: n.id, Config: n.cfg}
	for _, e := range n.entries {
		s.Items++
		s.Bytes += e.Size()
	}
	return s
}

// put stores e unless the node holds a newer version.
func (n *fakeNode) put(e contracts.Entry) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.entries[e.Key]; ok && old.Version > e.Version {
		return false
	}
	e.Value = slices.Clone(e.Value)
	n.entries[e.Key] = e
	return true
}

func (n *fakeNode) keys() map[string]uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]uint64, len(n.entries))
	for k, e := range n.entries {
		out[k] = e.Version
	}
	return out
}

func (n *fakeNode) configs() []contracts.CacheConfig {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.configured)
}

// remove deletes the entries of parts (only those in keep when keep is non-nil).
func (n *fakeNode) remove(parts []int, p int, keep map[string]uint64) (items, bytes int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, e := range n.entries {
		if !slices.Contains(parts, contracts.Partition(k, p)) {
			continue
		}
		if keep != nil {
			if v, ok := keep[k]; !ok || v != e.Version {
				continue
			}
		}
		delete(n.entries, k)
		items++
		bytes += e.Size()
	}
	return items, bytes
}

func (n *fakeNode) putBatch(m *nats.Msg) {
	entries, err := contracts.DecodeBatch(m.Data)
	if err != nil {
		return
	}
	var r contracts.PutBatchReply
	for _, e := range entries {
		if n.put(e) {
			r.Stored++
		} else {
			r.Skipped++
		}
	}
	respondJSON(m, r)
}

// handoff sends the entries of the asked partitions to the target in
// acknowledged batches of up to 50, then deletes what was sent.
func (n *fakeNode) handoff(m *nats.Msg) {
	n.mu.Lock()
	hook := n.onHandoff
	n.mu.Unlock()
	if hook != nil {
		hook()
	}
	var req contracts.HandoffRequest
	if json.Unmarshal(m.Data, &req) != nil || req.Validate() != nil {
		return
	}
	n.mu.Lock()
	var send []contracts.Entry
	for k, e := range n.entries {
		if slices.Contains(req.Partitions, contracts.Partition(k, req.PartitionCount)) {
			send = append(send, e)
		}
	}
	n.mu.Unlock()
	var reply contracts.HandoffReply
	sent := map[string]uint64{}
	for len(send) > 0 {
		batch := send[:min(50, len(send))]
		send = send[len(batch):]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := bus.RequestMsg(ctx, n.nc, &nats.Msg{Subject: contracts.NodePutBatch(req.Target), Data: contracts.EncodeBatch(batch)})
		cancel()
		if err != nil {
			m.Respond(nil)
			return
		}
		var pr contracts.PutBatchReply
		_ = json.Unmarshal(r.Data, &pr)
		reply.Batches++
		reply.Stored += pr.Stored
		reply.Skipped += pr.Skipped
		for _, e := range batch {
			reply.Keys++
			reply.Bytes += e.Size()
			sent[e.Key] = e.Version
		}
	}
	if req.Delete {
		n.remove(req.Partitions, req.PartitionCount, sent)
	}
	respondJSON(m, reply)
}

// fakeLauncher starts fakeNodes on one shared connection.
type fakeLauncher struct {
	nc *nats.Conn
	hb time.Duration

	mu         sync.Mutex
	nodes      map[contracts.NodeID]*fakeNode
	launched   []contracts.NodeID
	terminated []contracts.NodeID
	// gate, when set for an id, makes Launch of that id block until the
	// channel closes or ctx ends; blocked receives the id when it blocks.
	gate    map[contracts.NodeID]chan struct{}
	blocked chan contracts.NodeID
}

func newFakeLauncher(nc *nats.Conn, hb time.Duration) *fakeLauncher {
	return &fakeLauncher{nc: nc, hb: hb, nodes: map[contracts.NodeID]*fakeNode{}, gate: map[contracts.NodeID]chan struct{}{}, blocked: make(chan contracts.NodeID, 16)}
}

func (l *fakeLauncher) Launch(ctx context.Context, id contracts.NodeID, _ contracts.CacheConfig) error {
	l.mu.Lock()
	gate := l.gate[id]
	if _, running := l.nodes[id]; running {
		l.mu.Unlock()
		return fmt.Errorf("%s is already running", id)
	}
	l.mu.Unlock()
	if gate != nil {
		l.blocked <- id
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n, err := startFakeNode(l.nc, id, l.hb, false)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.nodes[id] = n
	l.launched = append(l.launched, id)
	l.mu.Unlock()
	return nil
}

func (l *fakeLauncher) Terminate(_ context.Context, id contracts.NodeID) error {
	l.mu.Lock()
	n := l.nodes[id]
	delete(l.nodes, id)
	if n != nil {
		l.terminated = append(l.terminated, id)
	}
	l.mu.Unlock()
	if n != nil {
		n.stopClean()
	}
	return nil
}

func (l *fakeLauncher) node(id contracts.NodeID) *fakeNode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes[id]
}

func (l *fakeLauncher) running() []contracts.NodeID {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []contracts.NodeID
	for id := range l.nodes {
		out = append(out, id)
	}
	slices.SortFunc(out, compareIDs)
	return out
}

func (l *fakeLauncher) history() (launched, terminated []contracts.NodeID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.launched), slices.Clone(l.terminated)
}

func (l *fakeLauncher) stopAll() {
	for _, id := range l.running() {
		_ = l.Terminate(context.Background(), id)
	}
}

type nopLauncher struct{}

func (nopLauncher) Launch(context.Context, contracts.NodeID, contracts.CacheConfig) error {
	return errors.New("nop launcher")
}
func (nopLauncher) Terminate(context.Context, contracts.NodeID) error { return nil }

// runManager runs Run in the background; the returned stop cancels it and
// fails the test unless Run returns nil within 20s. It is also called in
// t.Cleanup.
func runManager(t testing.TB, nc *nats.Conn, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nc, cfg, testLogger(t)) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
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
	}
	t.Cleanup(stop)
	return stop
}
