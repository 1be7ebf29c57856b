package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Empty is the request of endpoints that take no input (an empty body or {}).
type Empty struct{}

// CacheConfigRequest is PoolSetCacheConfig's body: capacity in MB and the
// policy under replacement_policy or its alias policy ("rr" is an alias of
// "random"). A field left out keeps its stored value.
type CacheConfigRequest struct {
	CapacityMB  *float64 `json:"capacity,omitempty"`
	Policy      string   `json:"replacement_policy,omitempty"`
	PolicyAlias string   `json:"policy,omitempty"`
}

// Validate requires at least one field and agreeing policy fields.
func (r CacheConfigRequest) Validate() error {
	if r.CapacityMB == nil && r.Policy == "" && r.PolicyAlias == "" {
		return errors.New("set capacity and/or replacement_policy")
	}
	if r.Policy != "" && r.PolicyAlias != "" && contracts.NormalizePolicy(r.Policy) != contracts.NormalizePolicy(r.PolicyAlias) {
		return fmt.Errorf("replacement_policy %q and policy %q disagree", r.Policy, r.PolicyAlias)
	}
	return nil
}

// startService registers the cachepool-manager micro service.
func (m *manager) startService(ctx context.Context) (micro.Service, error) {
	svc, err := micro.AddService(m.nc, micro.Config{
		Name:        contracts.ServiceManager,
		Version:     "0.1.0",
		Description: "cachepool manager: pool membership, partition table, resize queue, cache config",
	})
	if err != nil {
		return nil, fmt.Errorf("manager: micro service: %w", err)
	}
	waitTimeout := maxWait + 30*time.Second
	endpoints := []struct {
		name, subject string
		h             micro.Handler
	}{
		{"status", contracts.PoolStatusSubject, bus.JSON(ctx, 0, m.status)},
		{"resize", contracts.PoolResize, asyncJSON(m, waitTimeout, m.resize)},
		{"request", contracts.PoolRequest, asyncJSON(m, waitTimeout, m.request)},
		{"requests", contracts.PoolRequests, bus.JSON(ctx, 0, m.requestList)},
		{"set_auto", contracts.PoolSetAuto, bus.JSON(ctx, 0, m.setAuto)},
		{"set_mode", contracts.PoolSetMode, bus.JSON(ctx, 0, m.setMode)},
		{"mode", contracts.PoolMode, bus.JSON(ctx, 0, m.mode)},
		{"cache_config", contracts.PoolGetCacheConfig, bus.JSON(ctx, 0, m.cacheConfig)},
		{"set_cache_config", contracts.PoolSetCacheConfig, bus.JSON(ctx, 0, m.setCacheConfig)},
		{"clear_cache", contracts.PoolClearCache, bus.JSON(ctx, 0, m.clearCache)},
		{"clear_data", contracts.PoolClearData, bus.JSON(ctx, 0, m.clearData)},
	}
	for _, e := range endpoints {
		if err := svc.AddEndpoint(e.name, e.h, micro.WithEndpointSubject(e.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("manager: endpoint %s: %w", e.name, err)
		}
	}
	return svc, nil
}

// asyncJSON is bus.JSON for handlers that may wait: decoding and validation
// happen on the subscription goroutine (so 400s stay cheap and ordered),
// the call runs on its own goroutine so a waiting request never blocks the
// next one. At most maxWaiting calls run at once; more get 503.
func asyncJSON[Req, Resp any](m *manager, timeout time.Duration, fn func(context.Context, Req) (Resp, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		var req Req
		if data := bytes.TrimSpace(r.Data()); len(data) > 0 {
			if err := bus.DecodeStrict(data, &req); err != nil {
				bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "%v", err))
				return
			}
		}
		if v, ok := any(req).(bus.Validator); ok {
			if err := v.Validate(); err != nil {
				bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "%v", err))
				return
			}
		}
		select {
		case m.sem <- struct{}{}:
		default:
			bus.RespondError(r, contracts.Errorf(contracts.CodeUnavailable, "too many requests waiting, retry later"))
			return
		}
		// The micro.Request belongs to the subscription goroutine once the
		// handler returns, so the answer goes straight to the reply subject,
		// in the same shape (micro error headers on failure).
		reply := r.Reply()
		m.bg.Add(1)
		go func() {
			defer m.bg.Done()
			defer func() { <-m.sem }()
			ctx, cancel := context.WithTimeout(m.base, timeout)
			defer cancel()
			resp, err := fn(ctx, req)
			var body []byte
			if err == nil {
				body, err = json.Marshal(resp)
			}
			msg := &nats.Msg{Subject: reply, Data: body}
			if err != nil {
				we := bus.AsWire(err)
				msg.Data = nil
				msg.Header = nats.Header{}
				msg.Header.Set(micro.ErrorCodeHeader, strconv.Itoa(we.Code))
				msg.Header.Set(micro.ErrorHeader, we.Message)
			}
			if reply != "" {
				if err := m.nc.PublishMsg(msg); err != nil {
					m.log.Warn("answer request", "err", err)
				}
			}
		}()
	})
}

func waitFor(ms int64) (time.Duration, error) {
	if ms < 0 {
		return 0, contracts.Errorf(contracts.CodeBadRequest, "wait_ms must not be negative, got %d", ms)
	}
	return min(time.Duration(ms)*time.Millisecond, maxWait), nil
}

// resize queues a resize command (Nats-Msg-Id = request id, so a retried
// request is queued once), records it queued, and for a manual request
// switches the mode to manual keeping the automatic parameters. Bounds are
// not checked here: the command is checked when it runs. With wait_ms it
// answers once the request is terminal or the wait ends.
func (m *manager) resize(ctx context.Context, req contracts.ResizeRequest) (contracts.ResizeRequestState, error) {
	var rec contracts.ResizeRequestState
	wait, err := waitFor(req.WaitMS)
	if err != nil {
		return rec, err
	}
	source := req.Source
	if source == "" {
		source = contracts.SourceManual
	}
	if source != contracts.SourceManual && source != contracts.SourceScaler {
		return rec, contracts.Errorf(contracts.CodeBadRequest, "source must be %q or %q, got %q", contracts.SourceManual, contracts.SourceScaler, req.Source)
	}
	id := req.RequestID
	if id == "" {
		id = newID()
	}
	if err := validRequestID(id); err != nil {
		return rec, contracts.Errorf(contracts.CodeBadRequest, "%v", err)
	}
	cmd := contracts.ResizeCommand{RequestID: id, Target: req.Target, Source: source, RequestedAt: time.Now().UTC()}
	switch req.Change {
	case "increase":
		cmd.Change = 1
	case "decrease":
		cmd.Change = -1
	}
	if err := cmd.Validate(); err != nil {
		return rec, contracts.Errorf(contracts.CodeBadRequest, "%v", err)
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return rec, err
	}
	ack, err := m.js.PublishMsg(ctx, &nats.Msg{Subject: contracts.PoolResizeCommand, Data: body},
		jetstream.WithMsgID(id), jetstream.WithExpectStream(contracts.StreamResize))
	if err != nil {
		return rec, contracts.Errorf(contracts.CodeUnavailable, "could not queue the resize: %v", err)
	}
	if source == contracts.SourceManual {
		if _, err := m.switchMode(ctx, contracts.ModeManual, nil); err != nil {
			m.log.Warn("switch to manual mode after a manual resize", "err", err)
		}
	}
	if ack.Duplicate {
		rec, err = m.reqs.get(ctx, id)
		if err != nil { // the first request has not stored its record yet
			rec = contracts.ResizeRequestState{RequestID: id, Command: cmd, Status: contracts.StateQueued, Sequence: ack.Sequence}
		}
	} else {
		rec, _, err = m.reqs.set(ctx, id, transition{Status: contracts.StateQueued, Sequence: ack.Sequence, Command: &cmd})
		if err != nil {
			return rec, err
		}
	}
	if wait > 0 && !contracts.Terminal(rec.Status) {
		return m.reqs.wait(ctx, id, wait)
	}
	return rec, nil
}

// request answers one request's state, waiting up to wait_ms for a terminal one.
func (m *manager) request(ctx context.Context, req contracts.RequestLookup) (contracts.ResizeRequestState, error) {
	wait, err := waitFor(req.WaitMS)
	if err != nil {
		return contracts.ResizeRequestState{}, err
	}
	if err := validRequestID(req.RequestID); err != nil {
		return contracts.ResizeRequestState{}, contracts.Errorf(contracts.CodeBadRequest, "%v", err)
	}
	if wait > 0 {
		return m.reqs.wait(ctx, req.RequestID, wait)
	}
	return m.reqs.get(ctx, req.RequestID)
}

func (m *manager) requestList(ctx context.Context, _ Empty) (contracts.ResizeRequestList, error) {
	list, err := m.reqs.recent(ctx)
	return contracts.ResizeRequestList{Requests: list}, err
}

// switchMode sets the mode, and the automatic parameters when params is
// non-nil, keeping everything else; it events the change.
func (m *manager) switchMode(ctx context.Context, mode string, params *contracts.AutoParams) (contracts.ModeConfig, error) {
	changed := false
	st, err := m.st.update(ctx, func(s *poolRecord) error {
		next := s.Mode
		next.Mode = mode
		if params != nil {
			next.Params = *params
		}
		changed = next != s.Mode
		s.Mode = next
		return nil
	})
	if err != nil {
		return st.Mode, err
	}
	if changed {
		m.publish(contracts.EvtConfig, contracts.ConfigChanged{EventID: newID(), OccurredAt: time.Now().UTC(), Mode: st.Mode, Config: st.Config})
	}
	return st.Mode, nil
}

func (m *manager) setAuto(ctx context.Context, p contracts.AutoParams) (contracts.ModeConfig, error) {
	return m.switchMode(ctx, contracts.ModeAutomatic, &p)
}

func (m *manager) setMode(ctx context.Context, r contracts.SetModeRequest) (contracts.ModeConfig, error) {
	return m.switchMode(ctx, r.Mode, nil)
}

func (m *manager) mode(ctx context.Context, _ Empty) (contracts.ModeConfig, error) {
	st, _, err := m.st.state(ctx)
	return st.Mode, err
}

func (m *manager) cacheConfig(ctx context.Context, _ Empty) (contracts.CacheConfig, error) {
	st, _, err := m.st.state(ctx)
	return st.Config, err
}

// setCacheConfig validates, stores and pushes the cache config to every
// active node live. A node that joins later is configured before it takes
// partitions (see join). If a node cannot be reached the config stays
// stored and the reply is 503 naming the nodes.
func (m *manager) setCacheConfig(ctx context.Context, r CacheConfigRequest) (contracts.CacheConfig, error) {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	st, _, err := m.st.state(ctx)
	if err != nil {
		return contracts.CacheConfig{}, err
	}
	cfg := st.Config
	if r.CapacityMB != nil {
		cfg.CapacityMB = *r.CapacityMB
	}
	if p := cmp(r.Policy, r.PolicyAlias); p != "" {
		cfg.Policy = contracts.NormalizePolicy(p)
		if cfg.Policy == "" {
			return st.Config, contracts.Errorf(contracts.CodeBadRequest, "replacement_policy must be %q or %q (alias %q), got %q", contracts.PolicyLRU, contracts.PolicyRandom, "rr", p)
		}
	}
	if err := cfg.Validate(); err != nil {
		return st.Config, contracts.Errorf(contracts.CodeBadRequest, "%v", err)
	}
	st, err = m.st.update(ctx, func(s *poolRecord) error { s.Config = cfg; return nil })
	if err != nil {
		return cfg, err
	}
	m.publish(contracts.EvtConfig, contracts.ConfigChanged{EventID: newID(), OccurredAt: time.Now().UTC(), Mode: st.Mode, Config: cfg})
	tbl, _, err := m.st.table(ctx)
	if err != nil {
		return cfg, err
	}
	var failed []string
	for id, err := range m.configure(ctx, tbl.Nodes, cfg) {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s (%v)", id, err))
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return cfg, contracts.Errorf(contracts.CodeUnavailable, "config stored but not applied on: %s", strings.Join(failed, ", "))
	}
	return cfg, nil
}

// cmp returns the first non-empty string.
func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clearCache clears every node of the pool and sums what they held.
func (m *manager) clearCache(ctx context.Context, _ Empty) (contracts.ClearReply, error) {
	tbl, _, err := m.st.table(ctx)
	if err != nil {
		return contracts.ClearReply{}, err
	}
	nodes := slices.Clone(tbl.Nodes)
	for _, p := range tbl.Previous {
		if p != "" && !slices.Contains(nodes, p) {
			nodes = append(nodes, p)
		}
	}
	sum, err := bus.ClearNodes(ctx, m.nc, nodes, configureTimeout)
	m.publish(contracts.EvtCleared, contracts.Cleared{EventID: newID(), OccurredAt: time.Now().UTC(), What: "cache", CachedItems: sum.Items})
	if err != nil {
		return sum, contracts.Errorf(contracts.CodeUnavailable, "cleared %d items on %d nodes; not cleared: %v", sum.Items, sum.Nodes, err)
	}
	return sum, nil
}

// clearData asks the key-image store to delete every row, object and
// cached item, and answers its counts.
func (m *manager) clearData(ctx context.Context, _ Empty) (contracts.ClearAllReply, error) {
	r, err := bus.Request[contracts.ClearAllReply](ctx, m.nc, contracts.StoreClearAll, nil)
	if err != nil {
		return r, err
	}
	m.publish(contracts.EvtCleared, contracts.Cleared{EventID: newID(), OccurredAt: time.Now().UTC(), What: "data", Rows: r.Rows, Objects: r.Objects, CachedItems: r.CachedItems})
	return r, nil
}

// status answers the pool's state with each node's live counts (asked
// concurrently, with a short timeout; a node that does not answer shows
// zero counts).
func (m *manager) status(ctx context.Context, _ Empty) (contracts.PoolStatus, error) {
	st, _, err := m.st.state(ctx)
	if err != nil {
		return contracts.PoolStatus{}, err
	}
	tbl, _, err := m.st.table(ctx)
	if err != nil {
		return contracts.PoolStatus{}, err
	}
	out := contracts.PoolStatus{
		Size: len(tbl.Nodes), Target: st.Target, MaxNodes: m.cfg.MaxNodes, Mode: st.Mode, Config: st.Config,
		Epoch: tbl.Epoch, Partitions: tbl.Partitions, Nodes: []contracts.NodeInfo{},
	}
	load := Load(tbl.Owners)
	add := func(id contracts.NodeID, state string) {
		for _, n := range out.Nodes {
			if n.ID == id {
				return
			}
		}
		info := contracts.NodeInfo{ID: id, State: state, Partitions: load[id], Provider: m.cfg.Provisioner}
		if seen := m.reg.lastSeenAt(id); !seen.IsZero() {
			info.LastSeen = seen.UTC()
		}
		out.Nodes = append(out.Nodes, info)
	}
	for _, id := range tbl.Nodes {
		add(id, contracts.NodeActive)
	}
	for _, id := range tbl.Previous {
		if id != "" {
			add(id, contracts.NodeDraining)
		}
	}
	for _, id := range st.Leaving {
		add(id, contracts.NodeDraining)
	}
	for _, id := range st.Launching {
		add(id, contracts.NodeStarting)
	}
	if m.cfg.Provisioner == ProvisionerStandby {
		for _, id := range m.reg.idleStandby(m.busy(st, tbl)) {
			add(id, contracts.NodeStandby)
		}
	}
	var wg sync.WaitGroup
	for i := range out.Nodes {
		wg.Go(func() {
			s, err := nodeRequest[contracts.NodeStats](ctx, m.nc, contracts.NodeStatsSubject(out.Nodes[i].ID), nil, statsTimeout)
			if err == nil {
				out.Nodes[i].Items, out.Nodes[i].Bytes = s.Items, s.Bytes
			}
		})
	}
	if info, err := m.cons.Info(ctx); err == nil {
		out.Pending = int(info.NumPending) + info.NumAckPending
	}
	wg.Wait()
	out.Migration = m.migration.Load()
	return out, nil
}
