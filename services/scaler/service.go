package scaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// Version is the micro service version.
const Version = "0.1.0"

// keyDecisions is the entry of contracts.BucketScaler holding the recent
// decisions (a contracts.DecisionList, newest first).
const keyDecisions = "decisions"

// service is Run's state. Fields below mu are guarded by it.
type service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	log *slog.Logger

	mu            sync.Mutex
	decisions     []contracts.ScalerDecision // newest first
	inflight      string                     // our last command's request id until it is terminal
	inflightSince time.Time
	lastActed     time.Time // bucket start of our last command
	lastResize    time.Time // newest applied/failed resize seen on EvtRequest
}

// LeaseRole is the scaler's key in bus.LeaseBucket.
const LeaseRole = "scaler"

// Run decides every Tick until ctx ends and serves contracts.ServiceScaler.
// On cancel it stops the endpoint, lets a running tick finish, and returns
// nil. It does not close nc (the caller owns it).
//
// Several Runs may share a pool: they contend for the scaler lease
// (bus.RunLeased, key LeaseRole) and only the holder decides, publishes
// commands and serves the endpoint; the others stand by and take over
// within the lease TTL when it dies, reloading the stored decisions. A
// scaler that loses its lease stops at once and records nothing more.
//
// It never issues a command while one of its own commands is not terminal,
// never bases two commands on one stats bucket, and uses request ids derived
// from the bucket start ("scaler-<unix ms>") so that a command republished
// after a crash or a takeover is deduplicated by the stream.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", contracts.ServiceScaler)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("scaler: jetstream: %w", err)
	}
	lease := bus.LeaseConfig{Role: LeaseRole, TTL: cfg.LeaseTTL, Replicas: cfg.Replicas}
	return bus.RunLeased(ctx, js, lease, log, func(ctx context.Context) error {
		err := run(ctx, nc, js, cfg, log)
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // cancelled while starting: nothing was served, nothing to drain
		}
		return err
	})
}

// run is one term of the active scaler, until ctx ends.
func run(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) error {
	kv, err := bus.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketScaler,
		Description: "cachepool scaler: recent decisions",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("scaler: %w", err)
	}
	s := &service{cfg: cfg, nc: nc, js: js, kv: kv, log: log}
	if err := bus.Retry(ctx, nc, s.load); err != nil {
		return err
	}
	sub, err := nc.Subscribe(contracts.EvtRequest, s.onRequest)
	if err != nil {
		return fmt.Errorf("scaler: subscribe requests: %w", err)
	}
	defer sub.Unsubscribe()
	svc, err := micro.AddService(nc, micro.Config{Name: contracts.ServiceScaler, Version: Version, Description: "cachepool autoscaler decisions"})
	if err != nil {
		return fmt.Errorf("scaler: micro service: %w", err)
	}
	if err := svc.AddEndpoint("decisions", bus.JSON(ctx, 0, s.list), micro.WithEndpointSubject(contracts.ScalerDecisions)); err != nil {
		_ = svc.Stop()
		return fmt.Errorf("scaler: endpoint: %w", err)
	}
	log.Info("scaler running", "tick", cfg.Tick, "bucket", cfg.Bucket, "cooldown", cfg.Cooldown, "max_nodes", cfg.MaxNodes)

	ticker := time.NewTicker(cfg.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			s.tick(ctx)
		case <-ctx.Done():
			if err := svc.Stop(); err != nil {
				log.Warn("stopping the micro service", "err", err)
			}
			_ = sub.Drain()
			if errors.Is(context.Cause(ctx), bus.ErrLeaseLost) {
				log.Warn("scaler stopped: lease lost; standing by")
			} else {
				log.Info("scaler stopped")
			}
			return nil
		}
	}
}

func (s *service) list(context.Context, struct{}) (contracts.DecisionList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return contracts.DecisionList{Decisions: append([]contracts.ScalerDecision{}, s.decisions...)}, nil
}

// onRequest follows resize requests: it clears our in-flight command when it
// ends and remembers when the last resize completed.
func (s *service) onRequest(m *nats.Msg) {
	var st contracts.ResizeRequestState
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return
	}
	if !contracts.Terminal(st.Status) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.RequestID == s.inflight {
		s.inflight = ""
	}
	if st.Status != contracts.StateRejected && st.OccurredAt.After(s.lastResize) {
		s.lastResize = st.OccurredAt
	}
}

// tick gathers the inputs, decides, acts and records the decision.
func (s *service) tick(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, min(max(s.cfg.Tick, time.Second), 10*time.Second))
	defer cancel()
	in, out := s.gather(ctx)
	if parent.Err() != nil {
		return // shutting down: inputs may be partial, decide nothing
	}
	if out.Reason == "" {
		out = Decide(in)
	}
	d := contracts.ScalerDecision{
		EventID:    nuid.Next(),
		OccurredAt: in.Now.UTC(),
		Action:     out.Action,
		Reason:     out.Reason,
		Nodes:      in.Nodes,
		Target:     out.Target,
	}
	if in.Stats != nil {
		d.MissRate, d.BucketStart = in.Stats.MissRate, in.Stats.Start
	}
	if out.Action != contracts.DecisionNone {
		d.RequestID = "scaler-" + strconv.FormatInt(in.Stats.Start.UnixMilli(), 10)
		if err := s.enqueue(ctx, d); err != nil {
			if parent.Err() != nil {
				return // shutting down before the queue answered: nothing to record
			}
			d.Reason = fmt.Sprintf("no action: could not enqueue %s to %d (%s): %v", d.Action, d.Target, out.Reason, err)
			d.Action, d.Target, d.RequestID = contracts.DecisionNone, 0, ""
		} else {
			s.mu.Lock()
			s.inflight, s.inflightSince, s.lastActed = d.RequestID, in.Now, in.Stats.Start
			s.mu.Unlock()
		}
	}
	s.record(ctx, d)
}

// gather reads the rule's inputs. When one cannot be read, it returns a
// no-action outcome saying so.
func (s *service) gather(ctx context.Context) (Input, Outcome) {
	now := s.cfg.now()
	s.mu.Lock()
	in := Input{Now: now, MaxNodes: s.cfg.MaxNodes, Cooldown: s.cfg.Cooldown, Bucket: s.cfg.Bucket, LastActed: s.lastActed, LastResize: s.lastResize}
	inflight, since := s.inflight, s.inflightSince
	s.mu.Unlock()

	mode, err := bus.Request[contracts.ModeConfig](ctx, s.nc, contracts.PoolMode, nil)
	if err != nil {
		return in, none("cannot read the pool mode: %v", err)
	}
	in.Mode = mode
	if mode.Mode != contracts.ModeAutomatic {
		return in, Outcome{}
	}
	st, err := bus.Request[contracts.PoolStatus](ctx, s.nc, contracts.PoolStatusSubject, nil)
	if err != nil {
		return in, none("cannot read the pool status: %v", err)
	}
	in.Nodes = st.Size
	if st.MaxNodes > 0 {
		in.MaxNodes = min(in.MaxNodes, st.MaxNodes)
	}
	in.Busy = s.busy(ctx, st, inflight, since, now)

	if ps, err := s.poolState(ctx); err != nil {
		return in, none("cannot read the pool state: %v", err)
	} else if ps.LastResize.After(in.LastResize) {
		in.LastResize = ps.LastResize
	}

	rate, err := bus.Request[contracts.RateReply](ctx, s.nc, contracts.StatsRate, contracts.RateRequest{Rate: "miss"})
	if err != nil {
		return in, none("cannot read the miss rate: %v", err)
	}
	if !rate.Start.IsZero() {
		in.Stats = &Sample{Start: rate.Start, MissRate: rate.Value}
	}
	return in, Outcome{}
}

// busy says why a resize counts as running, or "".
func (s *service) busy(ctx context.Context, st contracts.PoolStatus, inflight string, since, now time.Time) string {
	switch {
	case st.Pending > 0:
		return fmt.Sprintf("a resize is queued or running (%d pending)", st.Pending)
	case st.Migration != nil && !st.Migration.Done:
		return "a migration is running"
	case st.Target > 0 && st.Size != st.Target:
		return fmt.Sprintf("the pool is converging (size %d, target %d)", st.Size, st.Target)
	case inflight == "":
		return ""
	}
	rs, err := bus.Request[contracts.ResizeRequestState](ctx, s.nc, contracts.PoolRequest, contracts.RequestLookup{RequestID: inflight})
	if err == nil && contracts.Terminal(rs.Status) {
		s.mu.Lock()
		if s.inflight == inflight {
			s.inflight = ""
		}
		s.mu.Unlock()
		return ""
	}
	// A command that the manager never reports on (for example a purged
	// queue) must not block the scaler forever; one it reports as queued or
	// running is waited for, since every command ends in a terminal state.
	if limit := 10 * max(s.cfg.Tick, s.cfg.Bucket); err != nil && now.Sub(since) > limit {
		s.log.Warn("giving up waiting for our resize request", "request_id", inflight, "after", limit)
		s.mu.Lock()
		if s.inflight == inflight {
			s.inflight = ""
		}
		s.mu.Unlock()
		return ""
	}
	status := "not yet seen by the manager"
	if err == nil {
		status = rs.Status
	}
	return fmt.Sprintf("our resize request %s is %s", inflight, status)
}

// poolState reads the manager's persisted state (zero when there is none yet).
func (s *service) poolState(ctx context.Context) (contracts.PoolState, error) {
	var ps contracts.PoolState
	kv, err := s.js.KeyValue(ctx, contracts.BucketPool)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ps, nil
	}
	if err != nil {
		return ps, err
	}
	e, err := kv.Get(ctx, contracts.KeyState)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ps, nil
	}
	if err != nil {
		return ps, err
	}
	if err := json.Unmarshal(e.Value(), &ps); err != nil {
		return ps, fmt.Errorf("pool state is not valid JSON: %w", err)
	}
	return ps, nil
}

// enqueue publishes the decision's command to the resize stream, Nats-Msg-Id = request id.
func (s *service) enqueue(ctx context.Context, d contracts.ScalerDecision) error {
	cmd := contracts.ResizeCommand{RequestID: d.RequestID, Target: d.Target, Source: contracts.SourceScaler, Reason: d.Reason, RequestedAt: d.OccurredAt}
	if err := cmd.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	ack, err := s.js.Publish(ctx, contracts.PoolResizeCommand, data, jetstream.WithMsgID(cmd.RequestID))
	if err != nil {
		return err
	}
	s.log.Info("resize enqueued", "request_id", cmd.RequestID, "target", cmd.Target, "seq", ack.Sequence, "duplicate", ack.Duplicate, "reason", d.Reason)
	return nil
}

// record keeps, stores and events d.
func (s *service) record(ctx context.Context, d contracts.ScalerDecision) {
	s.mu.Lock()
	s.decisions = append([]contracts.ScalerDecision{d}, s.decisions...)
	if len(s.decisions) > s.cfg.Keep {
		s.decisions = s.decisions[:s.cfg.Keep]
	}
	list := contracts.DecisionList{Decisions: append([]contracts.ScalerDecision{}, s.decisions...)}
	s.mu.Unlock()
	if data, err := json.Marshal(list); err == nil {
		if _, err := s.kv.Put(ctx, keyDecisions, data); err != nil && ctx.Err() == nil {
			s.log.Warn("could not store decisions", "err", err)
		}
	}
	if data, err := json.Marshal(d); err == nil {
		if err := s.nc.Publish(contracts.EvtDecision, data); err != nil {
			s.log.Warn("could not event a decision", "err", err)
		}
	}
	s.log.Debug("decision", "action", d.Action, "target", d.Target, "reason", d.Reason)
}

// load restores the recent decisions and, from the newest command, the
// bucket it acted on and the request to wait for.
func (s *service) load(ctx context.Context) error {
	e, err := s.kv.Get(ctx, keyDecisions)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scaler: read decisions: %w", err)
	}
	var list contracts.DecisionList
	if err := json.Unmarshal(e.Value(), &list); err != nil {
		s.log.Warn("stored decisions are unreadable; starting empty", "err", err)
		return nil
	}
	s.decisions = list.Decisions
	if len(s.decisions) > s.cfg.Keep {
		s.decisions = s.decisions[:s.cfg.Keep]
	}
	for _, d := range s.decisions {
		if d.RequestID != "" {
			s.inflight, s.inflightSince, s.lastActed = d.RequestID, d.OccurredAt, d.BucketStart
			break
		}
	}
	return nil
}
