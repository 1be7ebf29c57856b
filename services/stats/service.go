package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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

// keyPrefix names a bucket's entry in contracts.BucketStats: b.<start unix ms>.
const keyPrefix = "b."

func bucketKey(start int64) string { return keyPrefix + strconv.FormatInt(start, 10) }

// service is Run's state. agg is guarded by mu; everything else is set once.
type service struct {
	cfg Config
	nc  *nats.Conn
	kv  jetstream.KeyValue
	log *slog.Logger

	mu  sync.Mutex
	agg *Aggregator
}

// Run consumes node reports, keeps the buckets and serves contracts.ServiceStats
// until ctx ends. On cancel it stops the endpoints, drains its subscription,
// writes every changed bucket and returns nil; a failure of that last write
// is returned. It does not close nc (the caller owns it).
//
// Reports published while no stats instance runs are not seen (they are core
// NATS events); every report that is seen is counted exactly once, including
// across restarts, because a bucket and the sequence numbers it counted are
// stored in one KV entry.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	err := run(ctx, nc, cfg, log)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // cancelled while starting: nothing was served, nothing to drain
	}
	return err
}

func run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", contracts.ServiceStats)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("stats: jetstream: %w", err)
	}
	kv, err := bus.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketStats,
		Description: "cachepool stats: one entry per kept bucket, with the report sequence numbers it counted",
		History:     1,
		TTL:         time.Duration(cfg.Buckets+2) * cfg.Bucket,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	s := &service{cfg: cfg, nc: nc, kv: kv, log: log, agg: NewAggregator(cfg.Bucket, cfg.Buckets, cfg.Grace)}
	if err := bus.Retry(ctx, nc, s.load); err != nil {
		return err
	}

	sub, err := nc.Subscribe(contracts.NodeReportFilter(), s.onReport)
	if err != nil {
		return fmt.Errorf("stats: subscribe reports: %w", err)
	}
	svc, err := s.addService(ctx)
	if err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	log.Info("stats running", "bucket", cfg.Bucket, "buckets", cfg.Buckets)

	ticker := time.NewTicker(min(max(cfg.Bucket/10, 10*time.Millisecond), time.Second))
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			s.tick(ctx)
		case <-ctx.Done():
			return s.shutdown(svc, sub)
		}
	}
}

func (s *service) addService(ctx context.Context) (micro.Service, error) {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        contracts.ServiceStats,
		Version:     Version,
		Description: "cachepool per-bucket pool statistics",
	})
	if err != nil {
		return nil, fmt.Errorf("stats: micro service: %w", err)
	}
	err = errors.Join(
		svc.AddEndpoint("series", bus.JSON(ctx, 0, s.series), micro.WithEndpointSubject(contracts.StatsSeriesSubject)),
		svc.AddEndpoint("rate", bus.JSON(ctx, 0, s.rate), micro.WithEndpointSubject(contracts.StatsRate)),
	)
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("stats: endpoints: %w", err)
	}
	return svc, nil
}

func (s *service) series(context.Context, struct{}) (contracts.StatsSeries, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agg.Series(s.cfg.now()), nil
}

func (s *service) rate(_ context.Context, req contracts.RateRequest) (contracts.RateReply, error) {
	s.mu.Lock()
	p := s.agg.Last(s.cfg.now())
	s.mu.Unlock()
	v := p.MissRate
	if req.Rate == "hit" {
		v = p.HitRate
	}
	return contracts.RateReply{Rate: req.Rate, Value: v, Start: p.Start}, nil
}

func (s *service) onReport(m *nats.Msg) {
	var r contracts.NodeReport
	if err := json.Unmarshal(m.Data, &r); err != nil {
		s.log.Warn("node report is not valid JSON", "subject", m.Subject, "err", err)
		return
	}
	s.mu.Lock()
	res := s.agg.Add(r, s.cfg.now())
	s.mu.Unlock()
	switch {
	case res.Restart:
		s.log.Info("node restarted: new incarnation", "node", r.Node, "incarnation", r.Incarnation)
	case !res.Counted && res.Reason != "duplicate":
		s.log.Warn("node report not counted", "node", r.Node, "seq", r.Seq, "occurred_at", r.OccurredAt, "reason", res.Reason)
	}
}

// tick closes complete buckets, events them, forgets old ones and writes changed ones.
func (s *service) tick(ctx context.Context) {
	now := s.cfg.now()
	s.mu.Lock()
	closed := s.agg.Close(now)
	gone := s.agg.Prune(now)
	recs := s.agg.TakeDirty()
	s.mu.Unlock()
	s.write(ctx, recs)
	for _, start := range gone {
		if err := s.kv.Purge(ctx, bucketKey(start)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
			s.log.Warn("could not purge an old bucket", "key", bucketKey(start), "err", err)
		}
	}
	for _, p := range closed {
		p.EventID, p.OccurredAt = nuid.Next(), now.UTC()
		data, err := json.Marshal(p)
		if err == nil {
			err = s.nc.Publish(contracts.EvtMinute, data)
		}
		if err != nil {
			s.log.Warn("could not event a closed bucket", "start", p.Start, "err", err)
		}
	}
}

// write stores recs; the ones that fail are marked dirty again for the next tick.
func (s *service) write(ctx context.Context, recs []record) error {
	var failed []int64
	var errs []error
	for _, r := range recs {
		data, err := json.Marshal(r)
		if err == nil {
			_, err = s.kv.Put(ctx, bucketKey(r.StartMS), data)
		}
		if err != nil {
			failed = append(failed, r.StartMS)
			errs = append(errs, fmt.Errorf("bucket %d: %w", r.StartMS, err))
		}
	}
	if len(failed) > 0 {
		s.mu.Lock()
		s.agg.MarkDirty(failed...)
		s.mu.Unlock()
		if ctx.Err() == nil {
			s.log.Warn("could not store buckets; will retry", "count", len(failed), "err", errs[0])
		}
	}
	return errors.Join(errs...)
}

// load restores the kept buckets from KV; unreadable or foreign entries are purged.
func (s *service) load(ctx context.Context) error {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("stats: list stored buckets: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	now := s.cfg.now()
	loaded := 0
	for _, k := range keys {
		if !strings.HasPrefix(k, keyPrefix) {
			continue
		}
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stats: read stored bucket %s: %w", k, err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err == nil {
			err = s.agg.Load(r, now)
		}
		if err != nil {
			s.log.Warn("dropping a stored bucket", "key", k, "err", err)
			_ = s.kv.Purge(ctx, k)
			continue
		}
		loaded++
	}
	for _, start := range s.agg.Prune(now) {
		_ = s.kv.Purge(ctx, bucketKey(start))
	}
	s.log.Info("stats buckets restored", "count", loaded)
	return nil
}

func (s *service) shutdown(svc micro.Service, sub *nats.Subscription) error {
	if err := svc.Stop(); err != nil {
		s.log.Warn("stopping the micro service", "err", err)
	}
	if err := sub.Drain(); err == nil {
		deadline := time.Now().Add(5 * time.Second)
		for sub.IsValid() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	recs := s.agg.TakeDirty()
	s.mu.Unlock()
	if err := s.write(ctx, recs); err != nil {
		return fmt.Errorf("stats: final write: %w", err)
	}
	s.log.Info("stats stopped")
	return nil
}
