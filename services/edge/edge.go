package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/edge/dashboard"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// shutdownTimeout bounds how long Run lets in-flight requests finish after ctx ends.
const shutdownTimeout = 15 * time.Second

// Run serves the edge until ctx ends. It first sets up the watch of the
// partition table (contracts.BucketPool / contracts.KeyTable), then serves
// HTTP on cfg.Listener or cfg.Addr. When ctx ends it stops accepting
// connections, lets in-flight requests finish (bounded by shutdownTimeout)
// and returns nil. It never closes nc: the caller owns the connection.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		closeListener(cfg.Listener)
		return err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if nc == nil {
		closeListener(cfg.Listener)
		return errors.New("edge: no NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		closeListener(cfg.Listener)
		return fmt.Errorf("edge: jetstream: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	view := bus.NewTableView()
	if err := bus.WatchTable(watchCtx, js, view, log); err != nil {
		closeListener(cfg.Listener)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("edge: %w", err)
	}

	ln := cfg.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			return fmt.Errorf("edge: listen: %w", err)
		}
	}
	s := newServer(nc, cfg, view, log)
	poolSub, err := s.metrics.pool.watchPool(nc)
	if err != nil {
		closeListener(ln)
		return fmt.Errorf("edge: subscribe to %s: %w", contracts.EvtMinute, err)
	}
	defer poolSub.Unsubscribe()
	srv := &http.Server{
		Handler:           s.engine(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("edge listening", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("edge: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("edge: in-flight requests did not finish in time", "err", err)
		_ = srv.Close()
	}
	<-served
	return nil
}

// closeListener closes ln when Run returns before serving on it.
func closeListener(ln net.Listener) {
	if ln != nil {
		_ = ln.Close()
	}
}

// server holds the edge's dependencies. Its only state is the watched
// partition table and a cache of node subjects; it is safe for concurrent use.
type server struct {
	nc      *nats.Conn
	cfg     Config
	table   *bus.TableView
	log     *slog.Logger
	metrics *metrics
	// getSubjects caches contracts.NodeGet(id) per node id (the set of node
	// ids a pool ever uses is small), so the hit path does not format subjects.
	getSubjects sync.Map // contracts.NodeID -> string
	adminToken  []byte
}

func newServer(nc *nats.Conn, cfg Config, view *bus.TableView, log *slog.Logger) *server {
	s := &server{nc: nc, cfg: cfg, table: view, log: log, metrics: newMetrics()}
	if cfg.AdminToken != "" {
		s.adminToken = []byte(cfg.AdminToken)
	}
	return s
}

// engine builds the Gin engine with every route.
func (s *server) engine() *gin.Engine {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.Use(s.metrics.middleware, s.recoverer)
	e.NoRoute(func(c *gin.Context) {
		fail(c, contracts.Errorf(http.StatusNotFound, "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		fail(c, contracts.Errorf(http.StatusMethodNotAllowed, "method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})

	admin := s.requireAdmin

	// Front-end API.
	e.POST("/api/upload", s.upload)
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		e.Handle(m, "/api/key", s.keyJSON)
		e.Handle(m, "/api/key/*key", s.keyJSON)
		e.Handle(m, "/api/list_keys", s.listKeys)
	}
	e.GET("/api/image", s.image)
	e.GET("/api/image/*key", s.image)
	e.POST("/api/delete_all", admin, s.deleteAll)
	e.POST("/api/getNumNodes", s.numNodes)
	e.POST("/api/getRate", s.rate)
	e.POST("/api/configure_cache", admin, s.configureCache)
	e.POST("/api/poolsize/change", admin, s.poolsizeChange)

	// Manager API.
	m := e.Group("/api/manager")
	m.GET("/pool_node_list", s.poolNodeList)
	m.GET("/poolsize", s.poolsize)
	m.GET("/poolsize/config", s.poolsizeConfig)
	m.POST("/poolsize/manual", admin, s.poolsizeManual)
	m.POST("/poolsize/automatic", admin, s.poolsizeAutomatic)
	m.GET("/poolsize/requests", s.resizeRequests)
	m.GET("/poolsize/requests/:id", s.resizeRequest)
	m.GET("/aggregate_stats", s.aggregateStats)
	m.POST("/config", admin, s.setCacheConfig)
	m.GET("/cache/config", s.cacheConfig)
	m.POST("/cache/config", admin, s.setCacheConfig)
	m.DELETE("/cache/clear", admin, s.clearCache)
	m.DELETE("/data/clear", admin, s.clearData)
	m.GET("/scaler/decisions", s.scalerDecisions)
	m.POST("/mode", admin, s.setMode)

	// Operations and the dashboard.
	e.GET("/healthz", s.healthz)
	e.GET("/metrics", gin.WrapH(s.metricsHandler()))
	e.GET("/api/events", s.events) // live events as server-sent events (events.go)
	dash := gin.WrapH(dashboard.Handler())
	e.GET("/", dash)
	e.GET("/dashboard/*path", dash)
	return e
}

// recoverer turns a panic into a logged 500 envelope: never a bare 500 page.
func (s *server) recoverer(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Error("edge: handler panicked", "route", c.FullPath(), "panic", r)
			if !c.Writer.Written() {
				fail(c, contracts.Errorf(contracts.CodeInternal, "internal error"))
			} else {
				c.Abort()
			}
		}
	}()
	c.Next()
	if c.Writer.Status() >= 500 && len(c.Errors) > 0 {
		s.log.Warn("edge: request failed", "method", c.Request.Method, "route", c.FullPath(), "status", c.Writer.Status(), "err", c.Errors.Last().Err)
	}
}

// request sends msg on the bus within timeout (0: the edge's request
// timeout). Failures with a 5xx code (no responders, timeouts, internal
// errors) are counted under op; 4xx answers (a miss, a bad field) are not bus errors.
func (s *server) request(ctx context.Context, op string, msg *nats.Msg, timeout time.Duration) (*nats.Msg, error) {
	if timeout <= 0 {
		timeout = s.cfg.RequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := bus.RequestMsg(ctx, s.nc, msg)
	s.countBusError(op, err)
	return reply, err
}

func (s *server) countBusError(op string, err error) {
	if err == nil {
		return
	}
	if code := bus.CodeOf(err); code >= 500 {
		s.metrics.busError(op, code)
	}
}

// call sends req as JSON on subject and decodes the JSON reply into Resp.
func call[Resp any](ctx context.Context, s *server, op, subject string, req any, timeout time.Duration) (Resp, error) {
	if timeout <= 0 {
		timeout = s.cfg.RequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := bus.Request[Resp](ctx, s.nc, subject, req)
	s.countBusError(op, err)
	return resp, err
}
