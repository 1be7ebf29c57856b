package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func leaseLog(t *testing.T) *slog.Logger {
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// contender runs RunLeased on its own connection in the background.
type contender struct {
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
	started chan struct{} // closed at the first run
	cause   atomic.Value  // context.Cause of the run context when run ended
}

func startContender(t *testing.T, srv *server.Server, cfg bus.LeaseConfig, run func(ctx context.Context) error) *contender {
	t.Helper()
	c := &contender{nc: bustest.Connect(t, srv), done: make(chan error, 1), started: make(chan struct{})}
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	first := atomic.Bool{}
	go func() {
		c.done <- bus.RunLeased(ctx, js, cfg, leaseLog(t), func(ctx context.Context) error {
			if first.CompareAndSwap(false, true) {
				close(c.started)
			}
			err := run(ctx)
			c.cause.Store(fmt.Sprint(context.Cause(ctx)))
			return err
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// stop cancels the contender and returns RunLeased's result.
func (c *contender) stop(t *testing.T) error {
	t.Helper()
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("RunLeased did not return within 20s of cancel")
		return nil
	}
}

func isStarted(c *contender) bool {
	select {
	case <-c.started:
		return true
	default:
		return false
	}
}

func TestLeaseContendersNeverRunTogether(t *testing.T) {
	srv := bustest.RunServer(t)
	var active, maxActive, runs atomic.Int32
	ran := make([]atomic.Int32, 3)
	for i := range ran {
		startContender(t, srv, bus.LeaseConfig{Role: "exclusive", TTL: time.Second}, func(ctx context.Context) error {
			n := active.Add(1)
			defer active.Add(-1)
			for {
				m := maxActive.Load()
				if n <= m || maxActive.CompareAndSwap(m, n) {
					break
				}
			}
			runs.Add(1)
			ran[i].Add(1)
			// Hold the role for a while, then hand it on.
			select {
			case <-ctx.Done():
			case <-time.After(150 * time.Millisecond):
			}
			return nil
		})
	}
	bustest.Eventually(t, 60*time.Second, func() error {
		if runs.Load() < 12 {
			return fmt.Errorf("%d runs so far", runs.Load())
		}
		for i := range ran {
			if ran[i].Load() == 0 {
				return fmt.Errorf("contender %d has not run yet", i)
			}
		}
		return nil
	})
	if m := maxActive.Load(); m != 1 {
		t.Fatalf("up to %d contenders ran at once, want 1", m)
	}
}

func TestLeaseStandbyTakesOverAfterHolderDies(t *testing.T) {
	srv := bustest.RunServer(t)
	const ttl = 2 * time.Second
	cfg := bus.LeaseConfig{Role: "manager", TTL: ttl, Instance: "first"}
	holderEnded := make(chan time.Time, 1)
	holder := startContender(t, srv, cfg, func(ctx context.Context) error {
		<-ctx.Done()
		holderEnded <- time.Now()
		return nil
	})
	<-holder.started
	cfg.Instance = "second"
	var standbyStarted atomic.Int64
	standby := startContender(t, srv, cfg, func(ctx context.Context) error {
		standbyStarted.Store(time.Now().UnixNano())
		<-ctx.Done()
		return nil
	})

	// While the holder renews, the standby waits through several TTLs.
	js, _ := jetstream.New(standby.nc)
	ctx := context.Background()
	for deadline := time.Now().Add(3 * ttl); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if isStarted(standby) {
			t.Fatal("the standby ran while the holder renewed its lease")
		}
	}
	h, err := bus.ReadLease(ctx, js, "manager")
	if err != nil || h.Instance != "first" || h.PID != os.Getpid() || h.TTLMS != ttl.Milliseconds() {
		t.Fatalf("lease holder %+v, %v; want instance first with our pid", h, err)
	}
	if !h.RenewedAt.After(h.AcquiredAt) {
		t.Fatalf("the lease was not renewed: %+v", h)
	}

	// The holder's connection dies: no release, the lease must expire.
	died := time.Now()
	holder.nc.Close()
	bustest.Eventually(t, 5*ttl, func() error {
		if !isStarted(standby) {
			return errors.New("the standby has not taken over")
		}
		return nil
	})
	var ended time.Time
	select {
	case ended = <-holderEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the old holder's run was not cancelled")
	}
	took := time.Unix(0, standbyStarted.Load())
	if took.Before(ended) {
		t.Fatalf("the standby started %v before the old holder's run ended", ended.Sub(took))
	}
	if cause, _ := holder.cause.Load().(string); cause != bus.ErrLeaseLost.Error() {
		t.Fatalf("the old holder's run ended with cause %q, want %q", cause, bus.ErrLeaseLost)
	}
	t.Logf("takeover %v after the holder's connection died (ttl %v)", took.Sub(died).Round(time.Millisecond), ttl)
	if h, err := bus.ReadLease(ctx, js, "manager"); err != nil || h.Instance != "second" {
		t.Fatalf("lease holder %+v, %v; want second", h, err)
	}
}

func TestLeaseReleasedOnCleanStopIsTakenAtOnce(t *testing.T) {
	srv := bustest.RunServer(t)
	// A long TTL: a takeover well within it can only come from the release.
	const ttl = 10 * time.Second
	holder := startContender(t, srv, bus.LeaseConfig{Role: "scaler", TTL: ttl}, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	<-holder.started
	standby := startContender(t, srv, bus.LeaseConfig{Role: "scaler", TTL: ttl}, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	if err := holder.stop(t); err != nil {
		t.Fatalf("RunLeased after cancel: %v, want nil", err)
	}
	stopped := time.Now()
	bustest.Eventually(t, ttl/2, func() error {
		if !isStarted(standby) {
			return errors.New("the standby has not taken over")
		}
		return nil
	})
	t.Logf("takeover %v after a clean stop (ttl %v)", time.Since(stopped).Round(time.Millisecond), ttl)
	if cause, _ := holder.cause.Load().(string); cause != context.Canceled.Error() {
		t.Fatalf("the stopped holder's run ended with cause %q, want %q", cause, context.Canceled)
	}
	// A standby still waiting returns nil on cancel too.
	waiting := startContender(t, srv, bus.LeaseConfig{Role: "scaler", TTL: ttl}, func(ctx context.Context) error {
		t.Error("a third contender ran while the lease was held")
		return nil
	})
	time.Sleep(200 * time.Millisecond) // let it reach its wait; it must not run
	if err := waiting.stop(t); err != nil {
		t.Fatalf("RunLeased while waiting, after cancel: %v, want nil", err)
	}
}

func TestLeaseTakenOverByAnotherWriterIsLost(t *testing.T) {
	srv := bustest.RunServer(t)
	holder := startContender(t, srv, bus.LeaseConfig{Role: "manager", TTL: 3 * time.Second}, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	<-holder.started
	js, _ := jetstream.New(bustest.Connect(t, srv))
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bus.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Someone overwrites the lease (an operator, a split brain): the
	// holder's next renewal finds another revision and stops its run.
	if _, err := kv.Put(ctx, "manager", []byte(`{"instance":"intruder"}`)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if cause, _ := holder.cause.Load().(string); cause != bus.ErrLeaseLost.Error() {
			return fmt.Errorf("run ended with cause %q so far", cause)
		}
		return nil
	})
	// The lost holder does not delete the intruder's value.
	h, err := bus.ReadLease(ctx, js, "manager")
	if err != nil || h.Instance != "intruder" {
		t.Fatalf("lease %+v, %v; want the intruder's", h, err)
	}
}

func TestLeaseRunErrorIsReturnedAndReleased(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	js, _ := jetstream.New(nc)
	boom := errors.New("boom")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := bus.RunLeased(ctx, js, bus.LeaseConfig{Role: "manager", TTL: 30 * time.Second}, leaseLog(t), func(context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("RunLeased = %v, want %v", err, boom)
	}
	if _, err := bus.ReadLease(ctx, js, "manager"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after a failed run: %v, want released", err)
	}
}

func TestLeaseConfigErrors(t *testing.T) {
	srv := bustest.RunServer(t)
	js, _ := jetstream.New(bustest.Connect(t, srv))
	run := func(context.Context) error { t.Error("run called"); return nil }
	for _, cfg := range []bus.LeaseConfig{{}, {Role: "manager", TTL: -time.Second}, {Role: "no spaces"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := bus.RunLeased(ctx, js, cfg, nil, run); err == nil {
			t.Errorf("RunLeased(%+v) = nil, want an error", cfg)
		}
		cancel()
	}
}
