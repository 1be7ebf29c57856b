package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode"
	"github.com/nats-io/nats.go"
)

// errLauncherClosed refuses launches once the system is stopping.
var errLauncherClosed = errors.New("the system is stopping: no new cache nodes")

// localLauncher runs cache nodes as goroutines of this process, each on its
// own connection from connect. Terminate cancels the node and waits for its
// clean stop. Safe for concurrent use.
type localLauncher struct {
	connect func(name string) (*nats.Conn, error)
	cfg     Config
	log     *slog.Logger

	mu     sync.Mutex
	nodes  map[contracts.NodeID]*localNode
	closed bool // after stopAll: no more launches
}

type localNode struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newLocalLauncher(cfg Config, connect func(string) (*nats.Conn, error), log *slog.Logger) *localLauncher {
	return &localLauncher{connect: connect, cfg: cfg, log: log, nodes: map[contracts.NodeID]*localNode{}}
}

// Launch starts node id; the manager waits for its readiness announcement.
func (l *localLauncher) Launch(_ context.Context, id contracts.NodeID, cache contracts.CacheConfig) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errLauncherClosed
	}
	if _, ok := l.nodes[id]; ok {
		return nil // already running: launching is idempotent
	}
	nc, err := l.connect("cachepool-node-" + string(id))
	if err != nil {
		return fmt.Errorf("launch %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &localNode{cancel: cancel, done: make(chan struct{})}
	l.nodes[id] = n
	ncfg := cachenode.Config{
		ID: id, CapacityMB: cache.CapacityMB, Policy: cache.Policy,
		ReportInterval: l.cfg.ReportInterval, HeartbeatInterval: l.cfg.Heartbeat,
	}
	go func() {
		defer close(n.done)
		defer nc.Close()
		if err := cachenode.Run(ctx, nc, ncfg, l.log.With("service", contracts.ServiceNode)); err != nil {
			l.log.Error("cache node stopped", "node", id, "err", err)
		}
	}()
	return nil
}

// Terminate stops node id and waits until it has drained (or ctx ends).
func (l *localLauncher) Terminate(ctx context.Context, id contracts.NodeID) error {
	l.mu.Lock()
	n, ok := l.nodes[id]
	delete(l.nodes, id)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	n.cancel()
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopAll terminates every node still running.
func (l *localLauncher) stopAll(ctx context.Context) {
	l.mu.Lock()
	l.closed = true
	ids := make([]contracts.NodeID, 0, len(l.nodes))
	for id := range l.nodes {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	for _, id := range ids {
		_ = l.Terminate(ctx, id)
	}
}

// execLauncher runs each cache node as its own OS process:
// `cachepool serve cachenode --id <id> --nats <url> …`.
type execLauncher struct {
	exe     string
	natsURL string
	cfg     Config
	log     *slog.Logger

	mu     sync.Mutex
	procs  map[contracts.NodeID]*exec.Cmd
	done   map[contracts.NodeID]chan struct{}
	closed bool // after stopAll: no more launches
}

func newExecLauncher(cfg Config, natsURL string, log *slog.Logger) (*execLauncher, error) {
	exe := cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("exec provisioner: %w", err)
		}
	}
	return &execLauncher{exe: exe, natsURL: natsURL, cfg: cfg, log: log,
		procs: map[contracts.NodeID]*exec.Cmd{}, done: map[contracts.NodeID]chan struct{}{}}, nil
}

func (l *execLauncher) Launch(_ context.Context, id contracts.NodeID, cache contracts.CacheConfig) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errLauncherClosed
	}
	if _, ok := l.procs[id]; ok {
		return nil
	}
	args := []string{"serve", "cachenode", "--id", string(id), "--nats", l.natsURL,
		"--capacity", strconv.FormatFloat(cache.CapacityMB, 'f', -1, 64), "--policy", cache.Policy,
		"--report-interval", l.cfg.ReportInterval.String(), "--heartbeat", l.cfg.Heartbeat.String()}
	cmd := exec.Command(l.exe, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("launch %s: %w", id, err)
	}
	done := make(chan struct{})
	l.procs[id], l.done[id] = cmd, done
	go func() {
		err := cmd.Wait()
		l.log.Info("cache node process exited", "node", id, "pid", cmd.Process.Pid, "err", err)
		close(done)
	}()
	return nil
}

func (l *execLauncher) Terminate(ctx context.Context, id contracts.NodeID) error {
	l.mu.Lock()
	cmd, ok := l.procs[id]
	done := l.done[id]
	delete(l.procs, id)
	delete(l.done, id)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	// It did not stop in time (or the caller gave up): kill it, so no
	// node process outlives its launcher.
	_ = cmd.Process.Kill()
	<-done
	return ctx.Err()
}

func (l *execLauncher) stopAll(ctx context.Context) {
	l.mu.Lock()
	l.closed = true
	ids := make([]contracts.NodeID, 0, len(l.procs))
	for id := range l.procs {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	for _, id := range ids {
		_ = l.Terminate(ctx, id)
	}
}
