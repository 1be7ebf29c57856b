package bus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// ClearNodes clears every node of ids concurrently, each within timeout,
// and sums their replies; Nodes counts the nodes that answered. The error
// names every node that did not, in id order.
func ClearNodes(ctx context.Context, nc *nats.Conn, ids []contracts.NodeID, timeout time.Duration) (contracts.ClearReply, error) {
	var (
		mu     sync.Mutex
		sum    contracts.ClearReply
		failed = map[contracts.NodeID]error{}
		wg     sync.WaitGroup
	)
	for _, id := range ids {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rep, err := Request[contracts.ClearReply](ctx, nc, contracts.NodeClear(id), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[id] = err
				return
			}
			sum.Items += rep.Items
			sum.Bytes += rep.Bytes
			sum.Nodes++
		})
	}
	wg.Wait()
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(failed)) {
		errs = append(errs, fmt.Errorf("node %s: %w", id, failed[id]))
	}
	return sum, errors.Join(errs...)
}
