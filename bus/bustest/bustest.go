// Package bustest is cachepool's test kit: an embedded NATS server with
// JetStream on a random port, connections, and an eventually-poller.
package bustest

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// RunServer starts a JetStream server on 127.0.0.1 and a random port, with
// its store in t.TempDir(), sync-always, and a max payload for 8 MiB images.
// It shuts down in t.Cleanup. CACHEPOOL_TEST_NATS_LOG=1 prints its logs.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerIn(t, t.TempDir())
}

// RunServerIn is RunServer with a chosen store dir (to restart on the same data).
func RunServerIn(t testing.TB, dir string) *server.Server {
	t.Helper()
	var log *slog.Logger
	if os.Getenv("CACHEPOOL_TEST_NATS_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	srv, err := bus.RunServer(bus.ServerConfig{Port: -1, StoreDir: dir, SyncAlways: true, MaxPayload: bus.PayloadFor(8 << 20), Logger: log})
	if err != nil {
		t.Fatalf("bustest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Connect opens a TCP connection to srv, closed in t.Cleanup.
func Connect(t testing.TB, srv *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), append([]nats.Option{nats.Name(t.Name())}, opts...)...)
	if err != nil {
		t.Fatalf("bustest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ConnectInProcess opens an in-process connection to srv, closed in t.Cleanup.
func ConnectInProcess(t testing.TB, srv *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("bustest: connect in-process: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Eventually calls f every 10ms until it returns nil or timeout passes, then
// fails the test with f's last error. Call it from the test goroutine.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bustest: not true within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Errorf is a convenience for Eventually conditions.
func Errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
