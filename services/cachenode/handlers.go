package cachenode

import (
	"context"
	"strconv"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode/store"
	"github.com/nats-io/nats.go/micro"
)

// HandoffTimeout bounds one handoff request.
const HandoffTimeout = 10 * time.Minute

// empty is the request of endpoints that take no body.
type empty struct{}

type endpoint struct {
	name    string
	subject string
	handler micro.Handler
}

func (n *node) endpoints() []endpoint {
	return []endpoint{
		{"get", contracts.NodeGet(n.id), micro.HandlerFunc(n.get)},
		{"put", contracts.NodePut(n.id), micro.HandlerFunc(n.put)},
		{"put_batch", contracts.NodePutBatch(n.id), micro.HandlerFunc(n.putBatch)},
		{"invalidate", contracts.NodeInvalidate(n.id), bus.JSON(n.base, 0, n.invalidate)},
		{"clear", contracts.NodeClear(n.id), bus.JSON(n.base, 0, n.clear)},
		{"config", contracts.NodeConfigure(n.id), bus.JSON(n.base, 0, n.configure)},
		{"stats", contracts.NodeStatsSubject(n.id), bus.JSON(n.base, 0, func(context.Context, empty) (contracts.NodeStats, error) {
			return n.stats(), nil
		})},
		{"handoff", contracts.NodeHandoff(n.id), bus.JSON(n.base, HandoffTimeout, n.handoff)},
		{"drop", contracts.NodeDrop(n.id), bus.JSON(n.base, 0, n.drop)},
	}
}

// get answers the value with its version and content type, or 404.
func (n *node) get(r micro.Request) {
	if len(r.Data()) == 0 {
		bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "key is empty"))
		return
	}
	e, ok := n.store.Get(string(r.Data()))
	if !ok {
		bus.RespondError(r, contracts.Errorf(contracts.CodeNotFound, "key is not cached on node %s", n.id))
		return
	}
	_ = r.Respond(e.Value, micro.WithHeaders(micro.Headers{
		contracts.HdrVersion:     {strconv.FormatUint(e.Version, 10)},
		contracts.HdrContentType: {e.ContentType},
	}))
}

// put stores the body under the key and version of its headers.
func (n *node) put(r micro.Request) {
	h := r.Headers()
	key := h.Get(contracts.HdrKey)
	if err := contracts.ValidateKey(key); err != nil {
		bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "header %s: %v", contracts.HdrKey, err))
		return
	}
	raw := h.Get(contracts.HdrVersion)
	version, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "header %s must be a decimal version, got %q", contracts.HdrVersion, raw))
		return
	}
	// nats.go gives every message its own payload buffer, so the store may keep it.
	res := n.store.Put(contracts.Entry{Key: key, Version: version, ContentType: h.Get(contracts.HdrContentType), Value: r.Data()})
	_ = r.RespondJSON(contracts.PutReply{Stored: res.Stored, Version: res.Version, Reason: res.Reason})
}

// putBatch stores a migration batch; its entries count as imported, not as puts.
func (n *node) putBatch(r micro.Request) {
	entries, err := contracts.DecodeBatch(r.Data())
	if err != nil {
		bus.RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "%v", err))
		return
	}
	var reply contracts.PutBatchReply
	for _, e := range entries {
		// Decoded values alias the whole batch: copy, so one small entry
		// does not keep a megabyte alive.
		e.Value = append([]byte(nil), e.Value...)
		if n.store.Import(e).Stored {
			reply.Stored++
		} else {
			reply.Skipped++
		}
	}
	_ = r.RespondJSON(reply)
}

func (n *node) invalidate(_ context.Context, req contracts.InvalidateRequest) (contracts.InvalidateReply, error) {
	var reply contracts.InvalidateReply
	for _, k := range req.Keys {
		if n.store.Invalidate(k, req.BelowOrAt) {
			reply.Removed++
		}
	}
	return reply, nil
}

func (n *node) clear(context.Context, empty) (contracts.ClearReply, error) {
	items, bytes := n.store.Clear()
	n.log.Info("cache cleared", "items", items, "bytes", bytes)
	return contracts.ClearReply{Items: items, Bytes: bytes, Nodes: 1}, nil
}

func (n *node) configure(_ context.Context, cfg contracts.CacheConfig) (contracts.NodeStats, error) {
	evicted, err := n.store.SetConfig(cfg.CapacityBytes(), cfg.Policy)
	if err != nil {
		return contracts.NodeStats{}, contracts.Errorf(contracts.CodeBadRequest, "%v", err)
	}
	n.log.Info("cache config applied", "capacity_mb", cfg.CapacityMB, "policy", contracts.NormalizePolicy(cfg.Policy), "evicted", evicted)
	return n.stats(), nil
}

func (n *node) drop(_ context.Context, req contracts.DropRequest) (contracts.DropReply, error) {
	if err := checkPartitions(req.Partitions, req.PartitionCount); err != nil {
		return contracts.DropReply{}, err
	}
	items, bytes := n.store.DropPartitions(store.NewPartitionSet(req.Partitions, req.PartitionCount))
	n.log.Info("partitions dropped", "partitions", len(req.Partitions), "items", items, "bytes", bytes)
	return contracts.DropReply{Items: items, Bytes: bytes}, nil
}

func checkPartitions(parts []int, count int) error {
	if err := contracts.ValidatePartitions(count); err != nil {
		return contracts.Errorf(contracts.CodeBadRequest, "partition_count: %v", err)
	}
	for _, p := range parts {
		if p < 0 || p >= count {
			return contracts.Errorf(contracts.CodeBadRequest, "partitions: %d is out of range 0..%d", p, count-1)
		}
	}
	return nil
}
