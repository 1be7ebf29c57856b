package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// setupPatience bounds how long EnsureStream and EnsureKV keep retrying a
// JetStream that does not answer yet (a cluster electing its meta leader,
// a loaded machine creating an R3 asset).
const setupPatience = 45 * time.Second

// EnsureStream creates the stream or updates it to cfg. It is idempotent.
// Timeouts and a JetStream that is not ready yet are retried for up to 45 s
// (or until ctx ends); a refused permission is not.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := retrySetup(ctx, js.Conn(), func(ctx context.Context) (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("bus: ensure stream %s: %w", cfg.Name, withPermissionError(js, err))
	}
	return s, nil
}

// EnsureKV creates the bucket or updates it to cfg. It is idempotent and
// retries like EnsureStream.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := retrySetup(ctx, js.Conn(), func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", cfg.Bucket, withPermissionError(js, err))
	}
	return kv, nil
}

// retrySetup calls fn until it succeeds, fails for a reason other than a
// transient one, ctx ends or setupPatience passes. A JetStream API request
// the server refuses for permissions looks like a timeout to the client, so
// a permission violation on nc also ends the retries.
func retrySetup[T any](ctx context.Context, nc *nats.Conn, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(setupPatience)
	wait := 100 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := fn(attempt)
		cancel()
		refused := nc != nil && errors.Is(nc.LastError(), nats.ErrPermissionViolation)
		if err == nil || refused || !transientSetupError(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func transientSetupError(err error) bool {
	if errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// Retry calls fn until it succeeds or fails for a reason other than a
// transient one (a timeout, no responders, a JetStream that is not ready,
// as right after an R3 asset was created), for at most 45 s or until ctx
// ends. A permission violation on nc is never retried. Use it for start-up
// reads that should ride out a cluster settling.
func Retry(ctx context.Context, nc *nats.Conn, fn func(context.Context) error) error {
	_, err := retrySetup(ctx, nc, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}
