package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PoolBucketConfig is the configuration of contracts.BucketPool. Every
// service may ensure it; the manager is the only writer of its keys.
func PoolBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contracts.BucketPool,
		Description: "cachepool manager state: partition table and pool state",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	}
}

// TableView is a watched copy of the partition table. It is safe for
// concurrent use; Current never blocks.
type TableView struct {
	cur     atomic.Pointer[contracts.PartitionTable]
	mu      sync.Mutex
	changed chan struct{}
}

// Current returns the latest table, or nil before the first one arrives.
func (v *TableView) Current() *contracts.PartitionTable { return v.cur.Load() }

// Changed returns a channel closed at the next table change.
func (v *TableView) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// Set replaces the current table (used by the watcher and by tests).
func (v *TableView) Set(t *contracts.PartitionTable) {
	v.cur.Store(t)
	v.mu.Lock()
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

// NewTableView returns an empty view.
func NewTableView() *TableView { return &TableView{changed: make(chan struct{})} }

// WatchTable keeps view equal to the table stored in BucketPool until ctx
// ends. It creates the bucket if needed and returns once the watch is set up
// (the view holds the stored table if there is one). Malformed entries are
// logged and skipped.
func WatchTable(ctx context.Context, js jetstream.JetStream, view *TableView, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.KeyValue(ctx, contracts.BucketPool)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = EnsureKV(ctx, js, PoolBucketConfig(1))
	}
	if err != nil {
		return fmt.Errorf("bus: watch table: %w", withPermissionError(js, err))
	}
	w, err := kv.Watch(ctx, contracts.KeyTable)
	if err != nil {
		return fmt.Errorf("bus: watch table: %w", withPermissionError(js, err))
	}
	initial := true
	for initial {
		select {
		case e := <-w.Updates():
			if e == nil {
				initial = false
				continue
			}
			applyTableEntry(view, e, log)
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		}
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					applyTableEntry(view, e, log)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

func applyTableEntry(view *TableView, e jetstream.KeyValueEntry, log *slog.Logger) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var t contracts.PartitionTable
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		log.Error("partition table entry is not valid JSON", "revision", e.Revision(), "err", err)
		return
	}
	if err := t.Validate(); err != nil {
		log.Error("partition table entry is invalid", "revision", e.Revision(), "err", err)
		return
	}
	if cur := view.Current(); cur != nil && cur.Epoch > t.Epoch {
		return
	}
	view.Set(&t)
}

// withPermissionError adds the connection's last permissions violation to
// err: a JetStream request the server refused otherwise only times out,
// and the timeout alone does not say that the NATS user lacks a permission.
func withPermissionError(js jetstream.JetStream, err error) error {
	if js == nil || js.Conn() == nil {
		return err
	}
	if last := js.Conn().LastError(); last != nil && errors.Is(last, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w (the NATS server refused a permission this service needs: %v)", err, last)
	}
	return err
}
