package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream or updates it to cfg. It is idempotent.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: ensure stream %s: %w", cfg.Name, withPermissionError(js, err))
	}
	return s, nil
}

// EnsureKV creates the bucket or updates it to cfg. It is idempotent.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", cfg.Bucket, withPermissionError(js, err))
	}
	return kv, nil
}
