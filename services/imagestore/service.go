package imagestore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/sync/singleflight"
)

// Version is the micro service version.
const Version = "0.1.0"

// payloadHeadroom is what a put message needs beyond the image: headers.
const payloadHeadroom = 16 << 10

// metaStore is what the service needs of the metadata database
// (*meta.Store in production).
type metaStore interface {
	Upsert(ctx context.Context, key, object, contentType string, size int64) (meta.Upserted, error)
	Get(ctx context.Context, key string) (meta.Image, error)
	CurrentVersion(ctx context.Context, key string) (int64, error)
	ListKeys(ctx context.Context) ([]string, error)
	DeleteAll(ctx context.Context) (int64, error)
}

// Run opens the blob store and the database described by cfg, watches the
// partition table, and serves the store subjects (queue group
// contracts.QueueStore) on nc until ctx ends. Then it stops taking
// requests, lets the ones in flight finish (bounded by the timeouts),
// closes its stores and returns nil. It does not close nc, which belongs to
// the caller. It returns an error when cfg is invalid or a store cannot be
// opened.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("imagestore: config: %w", err)
	}
	cfg = cfg.withDefaults()
	openCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	blobs, err := blob.Open(openCtx, cfg.Blob, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("imagestore: %w", err)
	}
	defer blobs.Close()
	db, err := meta.Open(openCtx, cfg.Database, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("imagestore: %w", err)
	}
	defer db.Close()
	return run(ctx, nc, cfg, log, blobs, db)
}

// service holds one instance's state. Its handlers are safe for concurrent use.
type service struct {
	cfg   Config
	log   *slog.Logger
	base  context.Context // never cancelled: in-flight work finishes on shutdown
	blobs blob.Store
	meta  metaStore
	nodes nodeClient
	table *bus.TableView
	locks *keyLocks
	// flights deduplicates concurrent loads of one key. clear_all swaps in
	// a new group, so no load that starts after a clear joins an older one.
	flights atomic.Pointer[singleflight.Group]

	// loadsWaiting counts loads waiting for a flight's result (observability
	// and tests).
	loadsWaiting atomic.Int64

	mu       sync.RWMutex // guards stopping against inflight.Add
	stopping bool
	inflight sync.WaitGroup
	sem      chan struct{}
}

// run serves with already opened stores (tests pass wrapped ones).
func run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, blobs blob.Store, db metaStore) error {
	return newService(nc, cfg, log, blobs, db).serve(ctx, nc)
}

func newService(nc *nats.Conn, cfg Config, log *slog.Logger, blobs blob.Store, db metaStore) *service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &service{
		cfg:   cfg,
		log:   log.With("service", contracts.ServiceStore),
		base:  context.Background(),
		blobs: blobs,
		meta:  db,
		nodes: nodeClient{nc: nc, timeout: cfg.NodeTimeout},
		table: bus.NewTableView(),
		locks: newKeyLocks(),
		sem:   make(chan struct{}, cfg.MaxInFlight),
	}
	s.flights.Store(new(singleflight.Group))
	return s
}

// serve watches the table and answers the store subjects until ctx ends.
func (s *service) serve(ctx context.Context, nc *nats.Conn) error {
	cfg := s.cfg
	s.base = context.WithoutCancel(ctx)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("imagestore: jetstream: %w", err)
	}
	// The watch lives as long as ctx; WatchTable returns once it holds the
	// stored table (or knows there is none).
	if err := bus.WatchTable(ctx, js, s.table, s.log); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("imagestore: %w", err)
	}

	svc, err := micro.AddService(nc, micro.Config{
		Name:        contracts.ServiceStore,
		Version:     Version,
		Description: "cachepool key-image store: blobs, key metadata, write path and read-through fill",
		QueueGroup:  contracts.QueueStore,
	})
	if err != nil {
		return fmt.Errorf("imagestore: add service: %w", err)
	}
	endpoints := []struct {
		name, subject string
		h             micro.Handler
	}{
		{"put", contracts.StorePut, s.async(true, s.bounded(s.cfg.Timeout, s.handlePut))},
		// Loads wait for a flight without a slot; the flight takes one.
		{"load", contracts.StoreLoad, s.async(false, s.bounded(s.cfg.Timeout, s.handleLoad))},
		{"list", contracts.StoreList, s.async(true, jsonHandler(s.base, s.cfg.Timeout, s.list))},
		{"clear_all", contracts.StoreClearAll, s.async(true, jsonHandler(s.base, s.cfg.ClearTimeout, s.clearAll))},
		{"clear_cache", contracts.StoreClearCache, s.async(true, jsonHandler(s.base, s.cfg.ClearTimeout, s.clearCache))},
	}
	for _, e := range endpoints {
		if err := svc.AddEndpoint(e.name, e.h, micro.WithEndpointSubject(e.subject)); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("imagestore: add endpoint %s: %w", e.name, err)
		}
	}
	if limit := nc.MaxPayload(); limit > 0 && limit < cfg.MaxImageBytes+payloadHeadroom {
		s.log.Warn("the NATS server's max_payload is below the image size limit; large uploads will fail at the edge",
			"max_payload", limit, "max_image_bytes", cfg.MaxImageBytes)
	}
	s.log.Info("key-image store serving", "blob", redactBlob(cfg.Blob), "database", dbKind(cfg.Database), "max_image_bytes", cfg.MaxImageBytes)

	<-ctx.Done()
	return s.shutdown(svc)
}

// shutdown stops intake (draining the endpoint subscriptions), answers
// requests that were still queued with 503, and waits for in-flight ones.
func (s *service) shutdown(svc micro.Service) error {
	if err := svc.Stop(); err != nil {
		s.log.Warn("stopping the micro service", "err", err)
	}
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	bound := max(s.cfg.Timeout, s.cfg.ClearTimeout) + time.Second
	select {
	case <-done:
	case <-time.After(bound):
		s.log.Error("requests still running after the shutdown bound", "bound", bound)
	}
	s.log.Info("key-image store stopped")
	return nil
}

// async runs h on its own goroutine (micro delivers one endpoint's
// requests one by one) and turns a panic into a 500 answer; with limited,
// at most MaxInFlight such handlers run at once. After shutdown begins it
// answers 503 instead.
func (s *service) async(limited bool, h micro.Handler) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		s.mu.RLock()
		if s.stopping {
			s.mu.RUnlock()
			bus.RespondError(r, contracts.Errorf(contracts.CodeUnavailable, "key-image store instance is stopping"))
			return
		}
		s.inflight.Add(1)
		s.mu.RUnlock()
		if limited {
			s.sem <- struct{}{}
		}
		r = bus.Detach(s.nodes.nc, r) // answered after this handler returns
		go func() {
			defer func() {
				if limited {
					<-s.sem
				}
				s.inflight.Done()
			}()
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("handler panicked", "subject", r.Subject(), "panic", p)
					bus.RespondError(r, contracts.Errorf(contracts.CodeInternal, "internal error"))
				}
			}()
			h.Handle(r)
		}()
	})
}

// bounded gives fn a context that ends after timeout and is not cancelled
// by shutdown.
func (s *service) bounded(timeout time.Duration, fn func(context.Context, micro.Request)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		ctx, cancel := context.WithTimeout(s.base, timeout)
		defer cancel()
		fn(ctx, r)
	})
}

// jsonHandler adapts a JSON endpoint whose request body must be empty or {}.
func jsonHandler[Resp any](base context.Context, timeout time.Duration, fn func(context.Context) (Resp, error)) micro.Handler {
	return bus.JSON(base, timeout, func(ctx context.Context, _ struct{}) (Resp, error) { return fn(ctx) })
}
