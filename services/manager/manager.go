package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket settings.
const (
	// DuplicateWindow is how long the resize stream remembers request ids.
	DuplicateWindow = 10 * time.Minute
	// CommandRetention is how long applied commands stay in the stream (an audit log).
	CommandRetention = 7 * 24 * time.Hour
	// maxWait bounds a request's wait_ms.
	maxWait = 10 * time.Minute
	// maxWaiting bounds the requests answered asynchronously at once.
	maxWaiting = 1024
)

// manager is one running manager. The actor goroutine (actor.go) is the
// only writer of the partition table and of the resize fields of the pool
// state; API handlers write the mode and cache config fields with
// compare-and-set, so neither loses the other's changes.
type manager struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	base context.Context // Run's context, for API handlers

	st   *store
	reqs *requests
	reg  *registry
	cons jetstream.Consumer

	kickCh chan struct{}
	// cfgMu orders a cache config push against a node joining the table:
	// a joining node is configured and added to the table under it, a push
	// stores and sends the config under it, so no node misses a change.
	cfgMu     sync.Mutex
	migration atomic.Pointer[contracts.MigrationProgress]
	sem       chan struct{}
	bg        sync.WaitGroup
	heldMu    sync.Mutex
	held      []jetstream.Msg // commands abandoned at stop, nak'ed by Run
	// actor only: the last heal error logged, and the retry backoff
	lastHeal    string
	healBackoff time.Duration
	healAfter   time.Time
}

// LeaseRole is the manager's key in bus.LeaseBucket.
const LeaseRole = "manager"

// Run runs the manager until ctx ends and returns nil after a clean stop.
//
// Several Runs may share a pool (one per process): they contend for the
// manager lease (bus.RunLeased, key LeaseRole) and only the holder is
// active. A standby only follows node heartbeats, so that its view of the
// nodes is warm when it takes over; it serves no endpoint, consumes no
// command and writes nothing. The active one sets up the resize stream and
// consumer and the buckets, restores the stored state, serves the
// cachepool-manager micro service, applies queued resize commands one at a
// time, and heals the pool after node failures. When it loses the lease (it
// could not renew it in time) it stops as on a cancel and stands by again.
//
// A command at work when the active manager stops or dies is abandoned at
// its next step and resumed by the next active one: its decision is stored
// before any action, the last applied stream sequence is stored with every
// outcome, and every state and table write is a compare-and-set on the
// revision read, so a command is applied exactly once. Run does not close nc.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("manager: config: %w", err)
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", contracts.ServiceManager)
	kickCh := make(chan struct{}, 1)
	reg := newRegistry(FailedAfterHeartbeats*cfg.Heartbeat, cfg.Provisioner == ProvisionerStandby, func() {
		select {
		case kickCh <- struct{}{}:
		default:
		}
	})
	subs, err := reg.subscribe(nc)
	if err != nil {
		return fmt.Errorf("manager: subscribe to node events: %w", err)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("manager: jetstream: %w", err)
	}
	lease := bus.LeaseConfig{Role: LeaseRole, TTL: cfg.LeaseTTL, Replicas: cfg.Replicas}
	return bus.RunLeased(ctx, js, lease, log, func(ctx context.Context) error {
		m := &manager{nc: nc, js: js, cfg: cfg, log: log, base: ctx, reg: reg, kickCh: kickCh, sem: make(chan struct{}, maxWaiting)}
		return m.run(ctx)
	})
}

// run is one term of the active manager, until ctx ends (a stop or a lost
// lease); it returns nil then.
func (m *manager) run(ctx context.Context) error {
	cfg, log, nc := m.cfg, m.log, m.nc
	if err := m.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if n := m.reg.discover(ctx, nc, min(cfg.Heartbeat, 300*time.Millisecond)); n > 0 {
		log.Info("cache nodes found at start", "nodes", n)
	}
	m.probe(ctx)

	it, err := m.cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("manager: consume %s: %w", contracts.StreamResize, err)
	}
	svc, err := m.startService(ctx)
	if err != nil {
		it.Stop()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info("manager running", "provisioner", cfg.Provisioner, "max_nodes", cfg.MaxNodes, "migration", cfg.migrate())

	msgs := make(chan jetstream.Msg)
	var feeder sync.WaitGroup
	feeder.Add(1)
	go func() {
		defer feeder.Done()
		m.feed(ctx, it, msgs)
	}()
	m.actor(ctx, msgs)

	// Stop intake, then let in-flight handlers see the cancelled context.
	_ = svc.Stop()
	m.stopConsuming(it)
	feeder.Wait()
	m.heldMu.Lock()
	for _, msg := range m.held {
		_ = msg.Nak() // after the unsubscribe: redelivered to the next active manager
	}
	m.held = nil
	m.heldMu.Unlock()
	m.bg.Wait()
	if cause := context.Cause(ctx); errors.Is(cause, bus.ErrLeaseLost) {
		log.Warn("manager stopped: lease lost; standing by")
	} else {
		log.Info("manager stopped")
	}
	return nil
}

// setup ensures the stream, consumer and buckets and the initial state and table.
func (m *manager) setup(ctx context.Context) error {
	js := m.js
	if _, err := bus.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name:        contracts.StreamResize,
		Description: "cachepool resize commands, applied one at a time in order by the manager",
		Subjects:    []string{contracts.PoolResizeCommand},
		Storage:     jetstream.FileStorage,
		Replicas:    m.cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      CommandRetention,
		Duplicates:  DuplicateWindow,
	}); err != nil {
		return err
	}
	var err error
	m.cons, err = js.CreateOrUpdateConsumer(ctx, contracts.StreamResize, jetstream.ConsumerConfig{
		Durable:       contracts.ConsumerResize,
		Description:   "the manager's single resize consumer: one command at a time",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 1,
		AckWait:       m.cfg.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: contracts.PoolResizeCommand,
		Replicas:      m.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("manager: ensure consumer %s: %w", contracts.ConsumerResize, err)
	}
	pool, err := bus.EnsureKV(ctx, js, bus.PoolBucketConfig(m.cfg.Replicas))
	if err != nil {
		return err
	}
	reqKV, err := bus.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketRequests,
		Description: "cachepool resize requests: status and history per request id",
		TTL:         RequestTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    m.cfg.Replicas,
	})
	if err != nil {
		return err
	}
	m.st = &store{pool: pool, requests: reqKV}
	m.reqs = &requests{kv: reqKV, publish: m.publish, waiters: map[string][]chan struct{}{}}

	first := poolRecord{PoolState: contracts.PoolState{
		Mode:   contracts.ModeConfig{Mode: contracts.ModeManual, Params: contracts.DefaultAutoParams},
		Config: m.cfg.DefaultCache,
		Target: m.cfg.InitialNodes,
	}}
	first.Config.Policy = contracts.NormalizePolicy(first.Config.Policy)
	st, err := m.st.initState(ctx, first)
	if err != nil {
		return err
	}
	if st.Target > m.cfg.MaxNodes {
		m.log.Warn("the stored target is above max nodes; lowering it", "target", st.Target, "max_nodes", m.cfg.MaxNodes)
		if _, err := m.st.update(ctx, func(s *poolRecord) error { s.Target = min(s.Target, m.cfg.MaxNodes); return nil }); err != nil {
			return err
		}
	}
	tbl, err := m.st.initTable(ctx, m.cfg.Partitions)
	if err != nil {
		return err
	}
	if tbl.Partitions != m.cfg.Partitions {
		m.log.Warn("the stored table keeps its partition count", "stored", tbl.Partitions, "configured", m.cfg.Partitions)
	}
	return nil
}

// publish sends v as JSON on subject (events: best effort, logged on failure).
func (m *manager) publish(subject string, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		err = m.nc.Publish(subject, b)
	}
	if err != nil {
		m.log.Warn("publish event", "subject", subject, "err", err)
	}
}

// nodeRequest sends req as JSON to a node subject with a timeout.
func nodeRequest[Resp any](ctx context.Context, nc *nats.Conn, subject string, req any, timeout time.Duration) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return bus.Request[Resp](ctx, nc, subject, req)
}

// isProvision reports a failure to bring nodes in.
func isProvision(err error) bool {
	var pe *provisionError
	return errors.As(err, &pe)
}

// provisionError is a failure to bring nodes into the pool (launch,
// readiness, configuration, no standby node): the command that needed them
// ends failed instead of being retried.
type provisionError struct{ msg string }

func (e *provisionError) Error() string { return e.msg }

func provisionErrorf(format string, args ...any) error {
	return &provisionError{msg: fmt.Sprintf(format, args...)}
}

// probe starts the silence clock of every node the stored pool uses, and
// marks at once as stopped those that nobody answers for (no subscriber at
// all, as after a restart of the process that ran them), so the first
// reconcile replaces them without waiting for 3 heartbeats.
func (m *manager) probe(ctx context.Context) {
	st, _, err := m.st.state(ctx)
	if err != nil {
		return
	}
	tbl, _, err := m.st.table(ctx)
	if err != nil {
		return
	}
	nodes := m.busy(st, tbl)
	m.reg.touch(nodes...)
	var wg sync.WaitGroup
	for _, id := range tbl.Nodes {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			_, err := m.nc.RequestWithContext(pctx, contracts.NodeStatsSubject(id), nil)
			if errors.Is(err, nats.ErrNoResponders) {
				m.log.Info("table node does not answer at start", "node", id)
				m.reg.stopped(id)
			}
		})
	}
	wg.Wait()
}

// stopConsuming stops the pull subscription and waits (bounded) until its
// unsubscribe reached the server, so a nak sent afterwards is redelivered
// to the next subscriber, not to this one.
func (m *manager) stopConsuming(it jetstream.MessagesContext) {
	it.Stop()
	// Closed reports a closed channel once the subscription is invalid; the
	// iterator does not always close an earlier one, so ask again.
	if c, ok := it.(interface{ Closed() <-chan struct{} }); ok {
		deadline := time.Now().Add(5 * time.Second)
	wait:
		for time.Now().Before(deadline) {
			select {
			case <-c.Closed():
				break wait
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	_ = m.nc.FlushTimeout(5 * time.Second)
}
