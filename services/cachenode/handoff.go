package cachenode

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode/store"
	"github.com/nats-io/nats.go"
)

const (
	// DefaultBatchBytes bounds one handoff batch when the request sets none.
	DefaultBatchBytes = 1 << 20
	// handoffWindow is how many batches may await their acknowledgement.
	handoffWindow = 4
	// batchTimeout bounds the wait for one batch's acknowledgement.
	batchTimeout = 30 * time.Second
	// batchOverhead is EncodeBatch's fixed header; entryOverhead its per-entry framing.
	batchOverhead = 8
	entryOverhead = 2 + 2 + 8 + 4
	// payloadHeadroom keeps a batch under the connection's max payload.
	payloadHeadroom = 4096
)

func encodedSize(e contracts.Entry) int {
	return entryOverhead + len(e.Key) + len(e.ContentType) + len(e.Value)
}

// handoff sends the node's entries of the requested partitions to the
// target's put_batch subject in batches of at most BatchBytes (at least one
// entry each), with up to handoffWindow batches awaiting acknowledgement.
// With Delete, an entry is removed once its batch is acknowledged, and only
// if its version did not change meanwhile. The reply counts acknowledged
// entries only; the first failed batch ends the handoff with its error.
func (n *node) handoff(ctx context.Context, req contracts.HandoffRequest) (contracts.HandoffReply, error) {
	if req.Target == n.id {
		return contracts.HandoffReply{}, contracts.Errorf(contracts.CodeBadRequest, "target: a node cannot hand off to itself")
	}
	limit := req.BatchBytes
	if limit <= 0 {
		limit = DefaultBatchBytes
	}
	maxPayload := int(n.nc.MaxPayload()) - payloadHeadroom
	limit = min(limit, maxPayload)

	h := &handoffRun{node: n, req: req, ctx: ctx, sem: make(chan struct{}, handoffWindow)}
	keys := n.store.Keys(store.NewPartitionSet(req.Partitions, req.PartitionCount))
	var batch []contracts.Entry
	size := batchOverhead
	for _, k := range keys {
		e, ok := n.store.Lookup(k)
		if !ok {
			continue
		}
		es := encodedSize(e)
		if batchOverhead+es > maxPayload {
			h.skipTooLarge(e)
			continue
		}
		if len(batch) > 0 && size+es > limit {
			if !h.send(batch) {
				break
			}
			batch, size = nil, batchOverhead
		}
		batch = append(batch, e)
		size += es
	}
	if len(batch) > 0 {
		h.send(batch)
	}
	h.wg.Wait()
	n.log.Info("handoff done", "request_id", req.RequestID, "target", req.Target, "partitions", len(req.Partitions),
		"keys", h.reply.Keys, "bytes", h.reply.Bytes, "batches", h.reply.Batches, "delete", req.Delete, "err", h.err)
	if h.err != nil {
		return h.reply, h.err
	}
	return h.reply, nil
}

type handoffRun struct {
	*node
	req contracts.HandoffRequest
	ctx context.Context
	sem chan struct{}
	wg  sync.WaitGroup

	mu    sync.Mutex
	reply contracts.HandoffReply
	err   error
}

func (h *handoffRun) failed() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *handoffRun) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *handoffRun) skipTooLarge(e contracts.Entry) {
	h.log.Warn("handoff: entry larger than the max payload, not sent", "bytes", e.Size())
	h.mu.Lock()
	h.reply.Skipped++
	h.mu.Unlock()
}

// send starts one batch once a window slot is free. It reports false when
// the handoff already failed or its context ended.
func (h *handoffRun) send(batch []contracts.Entry) bool {
	select {
	case h.sem <- struct{}{}:
	case <-h.ctx.Done():
		h.fail(contracts.Errorf(contracts.CodeUnavailable, "handoff interrupted: %v", h.ctx.Err()))
		return false
	}
	if h.failed() != nil {
		<-h.sem
		return false
	}
	body := contracts.EncodeBatch(batch)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer func() { <-h.sem }()
		ctx, cancel := context.WithTimeout(h.ctx, batchTimeout)
		defer cancel()
		msg, err := bus.RequestMsg(ctx, h.nc, &nats.Msg{Subject: contracts.NodePutBatch(h.req.Target), Data: body})
		if err != nil {
			h.fail(err)
			return
		}
		var ack contracts.PutBatchReply
		if err := json.Unmarshal(msg.Data, &ack); err != nil {
			h.fail(contracts.Errorf(contracts.CodeInternal, "bad put_batch reply from %s: %v", h.req.Target, err))
			return
		}
		var bytes int64
		for _, e := range batch {
			bytes += e.Size()
			if h.req.Delete {
				h.store.DeleteIfVersion(e.Key, e.Version)
			}
		}
		h.mu.Lock()
		h.reply.Keys += len(batch)
		h.reply.Bytes += bytes
		h.reply.Stored += ack.Stored
		h.reply.Skipped += ack.Skipped
		h.reply.Batches++
		h.mu.Unlock()
	}()
	return true
}
