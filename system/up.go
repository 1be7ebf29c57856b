package system

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/services/edge"
	"github.com/cachepool/cachepool/services/imagestore"
	"github.com/cachepool/cachepool/services/manager"
	"github.com/cachepool/cachepool/services/scaler"
	"github.com/cachepool/cachepool/services/stats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Info tells where a running system can be reached.
type Info struct {
	HTTPURL string // the dashboard and API, e.g. http://127.0.0.1:8080
	NATSURL string // the NATS server the services use
}

// NATSCommand is a ready-to-paste nats CLI command that watches every event.
func (i Info) NATSCommand() string {
	return fmt.Sprintf("nats --server %s sub 'cachepool.v1.*.evt.>'", i.NATSURL)
}

// stopTimeout bounds each service's drain at shutdown.
const stopTimeout = 15 * time.Second

// Up runs the whole system in this process: the embedded NATS server
// (unless cfg.NATSURL names one), the key-image store, the manager with its
// cache nodes, stats, the scaler and the edge. It calls ready once the pool
// has a partition table and the edge listens, then runs until ctx ends, and
// shuts down in order: edge, scaler, stats, manager, store, nodes, NATS.
func Up(ctx context.Context, cfg Config, log *slog.Logger, ready func(Info)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Listen first, so a taken HTTP port fails before anything starts.
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", cfg.HTTPAddr, err)
	}
	defer lis.Close()

	var srv *server.Server
	natsURL := cfg.NATSURL
	connect := func(name string) (*nats.Conn, error) {
		return bus.Connect(ctx, natsURL, name, log, cfg.NATS.options()...)
	}
	if natsURL == "" {
		srv, err = startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		natsURL = srv.ClientURL()
		connect = func(name string) (*nats.Conn, error) {
			return bus.Connect(ctx, "", name, log, nats.InProcessServer(srv))
		}
	}

	adminNC, err := connect("cachepool-up")
	if err != nil {
		return err
	}
	defer bus.Drain(adminNC, stopTimeout)
	if err := bus.CheckMaxPayload(adminNC, cfg.MaxImageBytes); err != nil {
		return err
	}

	var launcher manager.Launcher
	switch cfg.Provisioner {
	case "local":
		l := newLocalLauncher(cfg, connect, log)
		defer l.stopAll(context.Background())
		launcher = l
	case "exec":
		l, err := newExecLauncher(cfg, natsURL, log.With("component", "launcher"))
		if err != nil {
			return err
		}
		defer l.stopAll(context.Background())
		launcher = l
	}

	// Deferred after the launcher's stop, so it runs first: the manager
	// stops before the nodes it would otherwise replace.
	sup := &supervisor{log: log, failed: make(chan error, 16)}
	defer sup.stopAll()

	services := []struct {
		name string
		run  func(context.Context, *nats.Conn) error
	}{
		{"store", func(ctx context.Context, nc *nats.Conn) error {
			return imagestore.Run(ctx, nc, storeConfig(cfg), log)
		}},
		{"manager", func(ctx context.Context, nc *nats.Conn) error {
			return manager.Run(ctx, nc, managerConfig(cfg, launcher), log)
		}},
		{"stats", func(ctx context.Context, nc *nats.Conn) error {
			return stats.Run(ctx, nc, statsConfig(cfg), log)
		}},
		{"scaler", func(ctx context.Context, nc *nats.Conn) error {
			return scaler.Run(ctx, nc, scalerConfig(cfg), log)
		}},
		{"edge", func(ctx context.Context, nc *nats.Conn) error {
			ecfg := edgeConfig(cfg)
			ecfg.Listener = lis
			return edge.Run(ctx, nc, ecfg, log.With("service", "cachepool-edge"))
		}},
	}
	for _, s := range services {
		nc, err := connect("cachepool-" + s.name)
		if err != nil {
			return err
		}
		sup.start(s.name, nc, s.run)
	}

	if err := waitForTable(ctx, adminNC, sup.failed); err != nil {
		return err
	}
	if ready != nil {
		ready(Info{HTTPURL: "http://" + lis.Addr().String(), NATSURL: natsURL})
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-sup.failed:
		return err
	}
}

func startEmbedded(cfg Config, log *slog.Logger) (*server.Server, error) {
	host, port := "127.0.0.1", 0
	if cfg.NATSListen != "" {
		h, p, err := net.SplitHostPort(cfg.NATSListen)
		if err != nil {
			return nil, fmt.Errorf("--nats-listen %q: %w", cfg.NATSListen, err)
		}
		host = h
		if _, err := fmt.Sscanf(p, "%d", &port); err != nil {
			return nil, fmt.Errorf("--nats-listen %q: bad port", cfg.NATSListen)
		}
		if port == 0 {
			port = -1
		}
	}
	srv, err := bus.RunServer(bus.ServerConfig{
		Host: host, Port: port,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		MaxPayload: bus.PayloadFor(cfg.MaxImageBytes),
		SyncAlways: true,
	})
	if err != nil {
		return nil, err
	}
	log.Info("embedded NATS server started", "url", srv.ClientURL())
	return srv, nil
}

// waitForTable returns once the manager has stored a partition table with
// at least one node.
func waitForTable(ctx context.Context, nc *nats.Conn, failed <-chan error) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	view := bus.NewTableView()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := bus.WatchTable(wctx, js, view, nil); err != nil {
		return err
	}
	for {
		changed := view.Changed()
		if t := view.Current(); t != nil && len(t.Nodes) > 0 {
			return nil
		}
		select {
		case <-changed:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// supervisor runs services and stops them in reverse start order.
type supervisor struct {
	log     *slog.Logger
	failed  chan error
	running []*running
}

type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	nc     *nats.Conn
}

func (s *supervisor) start(name string, nc *nats.Conn, run func(context.Context, *nats.Conn) error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: name, cancel: cancel, done: make(chan struct{}), nc: nc}
	s.running = append(s.running, r)
	go func() {
		defer close(r.done)
		if err := run(ctx, nc); err != nil && ctx.Err() == nil {
			s.failed <- fmt.Errorf("%s: %w", name, err)
		} else if err != nil {
			s.log.Warn("service stopped with an error", "service", name, "err", err)
		}
	}()
}

func (s *supervisor) stopAll() {
	for i := len(s.running) - 1; i >= 0; i-- {
		r := s.running[i]
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(stopTimeout):
			s.log.Error("service did not stop in time", "service", r.name, "timeout", stopTimeout)
		}
		bus.Drain(r.nc, stopTimeout)
	}
	s.running = nil
}
