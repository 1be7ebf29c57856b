package cachenode

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Version is the micro service version of a cache node.
const Version = "0.1.0"

// node is one running cache node. Its handlers are safe for concurrent use.
type node struct {
	id          contracts.NodeID
	incarnation string
	started     time.Time
	nc          *nats.Conn
	store       *store.Store
	log         *slog.Logger
	// base is the context of handlers; it outlives Run's context by at most
	// the shutdown grace, so a handoff in flight may finish.
	base     context.Context
	inflight atomic.Int64

	// report state, owned by Run's goroutine
	seq        uint64
	lastCount  contracts.Counters
	lastReport time.Time
}

// Run serves the cache node cfg.ID on nc until ctx ends, then stops cleanly
// and returns nil. It returns an error when cfg is invalid or the micro
// service cannot be registered.
//
// Once the service is registered Run publishes a contracts.NodeAnnouncement
// on contracts.NodeAnnounce, a heartbeat every HeartbeatInterval and a
// contracts.NodeReport (counter deltas) every ReportInterval. On cancel it
// publishes the announcement on contracts.NodeGone, stops the service (its
// subscriptions drain), waits up to ShutdownGrace for in-flight requests,
// publishes a last report so that the deltas sum to the true counts, and
// flushes nc. Run never closes or drains nc: several nodes may share it.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("cachenode: %w", err)
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.New(cfg.cacheConfig().CapacityBytes(), cfg.Policy)
	if err != nil {
		return fmt.Errorf("cachenode: %w", err)
	}
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	n := &node{
		id:          cfg.ID,
		incarnation: rand.Text(),
		started:     time.Now().UTC(),
		nc:          nc,
		store:       st,
		log:         log.With("node", cfg.ID),
		base:        base,
	}
	n.lastReport = n.started

	svc, err := n.addService()
	if err != nil {
		return err
	}
	n.log.Info("cache node serving", "capacity_mb", cfg.CapacityMB, "policy", cfg.Policy, "incarnation", n.incarnation, "standby", cfg.Standby)
	n.heartbeat()
	n.publish(contracts.NodeAnnounce, n.announcement(cfg.Standby))

	reports := time.NewTicker(cfg.ReportInterval)
	defer reports.Stop()
	beats := time.NewTicker(cfg.HeartbeatInterval)
	defer beats.Stop()
	for {
		select {
		case <-reports.C:
			n.report()
		case <-beats.C:
			n.heartbeat()
		case <-ctx.Done():
			n.shutdown(svc, cfg, cancelBase)
			return nil
		}
	}
}

func (n *node) addService() (micro.Service, error) {
	svc, err := micro.AddService(n.nc, micro.Config{
		Name:        contracts.ServiceNode,
		Version:     Version,
		Description: "cachepool cache node " + string(n.id),
		Metadata:    map[string]string{"node": string(n.id), "incarnation": n.incarnation},
	})
	if err != nil {
		return nil, fmt.Errorf("cachenode %s: add micro service: %w", n.id, err)
	}
	for _, ep := range n.endpoints() {
		if err := svc.AddEndpoint(ep.name, n.track(ep.handler), micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("cachenode %s: add endpoint %s: %w", n.id, ep.name, err)
		}
	}
	return svc, nil
}

// track counts the requests in flight, so shutdown can wait for them.
func (n *node) track(h micro.Handler) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		n.inflight.Add(1)
		defer n.inflight.Add(-1)
		h.Handle(r)
	})
}

func (n *node) shutdown(svc micro.Service, cfg Config, cancelBase context.CancelFunc) {
	n.publish(contracts.NodeGone, n.announcement(cfg.Standby))
	if err := svc.Stop(); err != nil {
		n.log.Warn("stop micro service", "err", err)
	}
	// Let in-flight requests finish within the grace, then cancel the rest.
	deadline := time.Now().Add(cfg.ShutdownGrace)
	for n.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancelBase()
	for n.inflight.Load() > 0 && time.Now().Before(deadline.Add(time.Second)) {
		time.Sleep(5 * time.Millisecond)
	}
	n.report()
	if err := n.nc.FlushTimeout(cfg.ShutdownGrace); err != nil && !n.nc.IsClosed() {
		n.log.Warn("flush on stop", "err", err)
	}
	n.log.Info("cache node stopped")
}

func (n *node) announcement(standby bool) contracts.NodeAnnouncement {
	return contracts.NodeAnnouncement{
		EventID:     rand.Text(),
		OccurredAt:  time.Now().UTC(),
		Node:        n.id,
		Incarnation: n.incarnation,
		Standby:     standby,
	}
}

func (n *node) heartbeat() {
	st := n.store.Stats()
	n.publish(contracts.NodeHeartbeat(n.id), contracts.Heartbeat{
		Node:        n.id,
		Incarnation: n.incarnation,
		OccurredAt:  time.Now().UTC(),
		Items:       st.Items,
		Bytes:       st.Bytes,
	})
}

// report publishes the counter deltas since the previous report. It is
// called only from Run's goroutine.
func (n *node) report() {
	st := n.store.Stats()
	now := time.Now().UTC()
	n.seq++
	n.publish(contracts.NodeReportSubject(n.id), contracts.NodeReport{
		EventID:     rand.Text(),
		OccurredAt:  now,
		Node:        n.id,
		Incarnation: n.incarnation,
		Seq:         n.seq,
		IntervalMS:  now.Sub(n.lastReport).Milliseconds(),
		Delta:       delta(st.Counters, n.lastCount),
		Items:       st.Items,
		Bytes:       st.Bytes,
	})
	n.lastCount, n.lastReport = st.Counters, now
}

func delta(cur, prev contracts.Counters) contracts.Counters {
	return contracts.Counters{
		Gets:      cur.Gets - prev.Gets,
		Hits:      cur.Hits - prev.Hits,
		Misses:    cur.Misses - prev.Misses,
		Puts:      cur.Puts - prev.Puts,
		Evictions: cur.Evictions - prev.Evictions,
	}
}

func (n *node) publish(subject string, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		err = n.nc.Publish(subject, b)
	}
	if err != nil {
		n.log.Warn("publish", "subject", subject, "err", err)
	}
}

func (n *node) stats() contracts.NodeStats {
	st := n.store.Stats()
	return contracts.NodeStats{
		Node:      n.id,
		Config:    contracts.CacheConfig{CapacityMB: float64(st.CapacityBytes) / (1 << 20), Policy: st.Policy},
		Counters:  st.Counters,
		Items:     st.Items,
		Bytes:     st.Bytes,
		StartedAt: n.started,
	}
}
