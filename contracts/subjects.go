package contracts

import (
	"errors"
	"fmt"
	"strings"
)

// Prefix is the first two tokens of every cachepool subject.
const Prefix = "cachepool.v1"

// NodeID names one cache node. It is one subject token: letters, digits,
// '-' and '_', 1 to 64 bytes.
type NodeID string

// ErrBadNodeID reports a node id that cannot be a subject token.
var ErrBadNodeID = errors.New("contracts: node id must be 1-64 characters of [A-Za-z0-9_-]")

// Valid reports whether id can be used as a subject token.
func (id NodeID) Valid() error {
	if len(id) == 0 || len(id) > 64 {
		return ErrBadNodeID
	}
	for _, r := range id {
		ok := r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return ErrBadNodeID
		}
	}
	return nil
}

func subject(domain, kind, name string, ids ...string) string {
	s := fmt.Sprintf("%s.%s.%s.%s", Prefix, domain, kind, name)
	if len(ids) > 0 {
		s += "." + strings.Join(ids, ".")
	}
	return s
}

// Node request subjects. Each node answers on its own id-addressed subjects.
// Bodies and headers are described in docs/SUBJECTS.md and nodewire.go.

// NodeGet is cachepool.v1.node.req.get.<id>: body = key; reply body = value
// with HdrVersion and HdrContentType, or a 404 service error on a miss.
func NodeGet(id NodeID) string { return subject("node", "req", "get", string(id)) }

// NodePut is cachepool.v1.node.req.put.<id>: HdrKey, HdrVersion,
// HdrContentType, body = value; reply [PutReply].
func NodePut(id NodeID) string { return subject("node", "req", "put", string(id)) }

// NodePutBatch is cachepool.v1.node.req.put_batch.<id>: body = EncodeBatch
// of entries; reply [PutBatchReply]. Used by migrations.
func NodePutBatch(id NodeID) string { return subject("node", "req", "put_batch", string(id)) }

// NodeInvalidate is cachepool.v1.node.req.invalidate.<id>: [InvalidateRequest]; reply [InvalidateReply].
func NodeInvalidate(id NodeID) string { return subject("node", "req", "invalidate", string(id)) }

// NodeClear is cachepool.v1.node.req.clear.<id>: empty body; reply [ClearReply].
func NodeClear(id NodeID) string { return subject("node", "req", "clear", string(id)) }

// NodeConfigure is cachepool.v1.node.req.config.<id>: [CacheConfig]; reply [NodeStats].
func NodeConfigure(id NodeID) string { return subject("node", "req", "config", string(id)) }

// NodeStatsSubject is cachepool.v1.node.req.stats.<id>: empty body; reply [NodeStats].
func NodeStatsSubject(id NodeID) string { return subject("node", "req", "stats", string(id)) }

// NodeHandoff is cachepool.v1.node.req.handoff.<id>: [HandoffRequest]; the
// node sends its entries of the listed partitions to the target node in
// acknowledged batches and replies [HandoffReply] when done.
func NodeHandoff(id NodeID) string { return subject("node", "req", "handoff", string(id)) }

// NodeDrop is cachepool.v1.node.req.drop.<id>: [DropRequest]; the node
// deletes its entries of the listed partitions; reply [DropReply].
func NodeDrop(id NodeID) string { return subject("node", "req", "drop", string(id)) }

// Node events.

// NodeHeartbeat is cachepool.v1.node.evt.heartbeat.<id>: [Heartbeat].
func NodeHeartbeat(id NodeID) string { return subject("node", "evt", "heartbeat", string(id)) }

// NodeHeartbeatFilter is cachepool.v1.node.evt.heartbeat.*
func NodeHeartbeatFilter() string { return subject("node", "evt", "heartbeat", "*") }

// NodeReportSubject is cachepool.v1.stats.evt.report.<id>: [NodeReport], per-interval deltas.
func NodeReportSubject(id NodeID) string { return subject("stats", "evt", "report", string(id)) }

// NodeReportFilter is cachepool.v1.stats.evt.report.*
func NodeReportFilter() string { return subject("stats", "evt", "report", "*") }

// Key-image store requests (queue group: any instance answers).
var (
	// StorePut is cachepool.v1.store.req.put: HdrKey, HdrContentType, body = image; reply [StorePutReply].
	StorePut = subject("store", "req", "put")
	// StoreLoad is cachepool.v1.store.req.load: body = key; reply body = image with
	// HdrVersion and HdrContentType, or a 404 service error.
	StoreLoad = subject("store", "req", "load")
	// StoreList is cachepool.v1.store.req.list: empty body; reply [ListKeysReply].
	StoreList = subject("store", "req", "list")
	// StoreClearAll is cachepool.v1.store.req.clear_all: empty body; reply [ClearAllReply].
	StoreClearAll = subject("store", "req", "clear_all")
	// StoreClearCache is cachepool.v1.store.req.clear_cache: empty body; reply [ClearReply] summed over nodes.
	StoreClearCache = subject("store", "req", "clear_cache")
)

// Manager requests (micro service cachepool-manager).
var (
	// PoolStatusSubject is cachepool.v1.pool.req.status: empty body; reply [PoolStatus].
	PoolStatusSubject = subject("pool", "req", "status")
	// PoolResize is cachepool.v1.pool.req.resize: [ResizeRequest]; reply [ResizeRequestState]
	// once queued (or once terminal when wait_ms > 0).
	PoolResize = subject("pool", "req", "resize")
	// PoolRequest is cachepool.v1.pool.req.request: [RequestLookup]; reply [ResizeRequestState].
	PoolRequest = subject("pool", "req", "request")
	// PoolRequests is cachepool.v1.pool.req.requests: empty body; reply [ResizeRequestList] (recent first).
	PoolRequests = subject("pool", "req", "requests")
	// PoolSetAuto is cachepool.v1.pool.req.set_auto: [AutoParams]; reply [ModeConfig].
	PoolSetAuto = subject("pool", "req", "set_auto")
	// PoolSetMode is cachepool.v1.pool.req.set_mode: [SetModeRequest]; reply [ModeConfig].
	PoolSetMode = subject("pool", "req", "set_mode")
	// PoolMode is cachepool.v1.pool.req.mode: empty body; reply [ModeConfig].
	PoolMode = subject("pool", "req", "mode")
	// PoolGetCacheConfig is cachepool.v1.pool.req.cache_config: empty; reply [CacheConfig].
	PoolGetCacheConfig = subject("pool", "req", "cache_config")
	// PoolSetCacheConfig is cachepool.v1.pool.req.set_cache_config: [CacheConfig]; reply [CacheConfig].
	PoolSetCacheConfig = subject("pool", "req", "set_cache_config")
	// PoolClearCache is cachepool.v1.pool.req.clear_cache: empty; reply [ClearReply].
	PoolClearCache = subject("pool", "req", "clear_cache")
	// PoolClearData is cachepool.v1.pool.req.clear_data: empty; reply [ClearAllReply].
	PoolClearData = subject("pool", "req", "clear_data")
)

// PoolResizeCommand is cachepool.v1.pool.cmd.resize: a [ResizeCommand] in
// the RESIZE stream, Nats-Msg-Id = request id. The manager applies commands
// one at a time in stream order.
var PoolResizeCommand = subject("pool", "cmd", "resize")

// Pool events.
var (
	// EvtRequest is cachepool.v1.pool.evt.request: [ResizeRequestState] at every state change.
	EvtRequest = subject("pool", "evt", "request")
	// EvtTable is cachepool.v1.pool.evt.table: [PartitionTable] when a new epoch is stored.
	EvtTable = subject("pool", "evt", "table")
	// EvtMigration is cachepool.v1.pool.evt.migration: [MigrationProgress].
	EvtMigration = subject("pool", "evt", "migration")
	// EvtNode is cachepool.v1.pool.evt.node: [NodeEvent] (joined, ready, left, failed).
	EvtNode = subject("pool", "evt", "node")
	// EvtConfig is cachepool.v1.pool.evt.config: [ConfigChanged].
	EvtConfig = subject("pool", "evt", "config")
	// EvtCleared is cachepool.v1.pool.evt.cleared: [Cleared].
	EvtCleared = subject("pool", "evt", "cleared")
)

// Node registration (standby provisioning and readiness).
var (
	// NodeAnnounce is cachepool.v1.node.evt.ready: [NodeAnnouncement] when a node is ready to serve.
	NodeAnnounce = subject("node", "evt", "ready")
	// NodeGone is cachepool.v1.node.evt.stopped: [NodeAnnouncement] when a node stops cleanly.
	NodeGone = subject("node", "evt", "stopped")
)

// Stats.
var (
	// StatsSeriesSubject is cachepool.v1.stats.req.series: empty; reply [StatsSeries].
	StatsSeriesSubject = subject("stats", "req", "series")
	// StatsRate is cachepool.v1.stats.req.rate: [RateRequest]; reply [RateReply].
	StatsRate = subject("stats", "req", "rate")
	// EvtMinute is cachepool.v1.stats.evt.minute: [StatsPoint] when a bucket closes.
	EvtMinute = subject("stats", "evt", "minute")
)

// Scaler.
var (
	// ScalerDecisions is cachepool.v1.scaler.req.decisions: empty; reply [DecisionList].
	ScalerDecisions = subject("scaler", "req", "decisions")
	// EvtDecision is cachepool.v1.scaler.evt.decision: [ScalerDecision].
	EvtDecision = subject("scaler", "evt", "decision")
)

// EventsFilter is cachepool.v1.*.evt.> — every event (heartbeats and reports included).
const EventsFilter = Prefix + ".*.evt.>"

// Streams, consumers, buckets and micro service names.
const (
	// StreamResize holds resize commands; file storage, sync-always server.
	StreamResize = "CACHEPOOL_RESIZE"
	// ConsumerResize is the manager's single durable consumer (max ack pending 1).
	ConsumerResize = "manager-resize"

	// BucketPool holds the manager's state: keys KeyTable and KeyState.
	BucketPool = "cachepool_pool"
	// KeyTable is the [PartitionTable] key in BucketPool, watched by everyone.
	KeyTable = "table"
	// KeyState is the manager's [PoolState] key in BucketPool.
	KeyState = "state"
	// BucketRequests holds one [ResizeRequestState] per request id.
	BucketRequests = "cachepool_requests"
	// BucketStats holds the stats service's buckets across restarts.
	BucketStats = "cachepool_stats"
	// BucketScaler holds the scaler's recent decisions.
	BucketScaler = "cachepool_scaler"

	ServiceNode    = "cachepool-node"
	ServiceStore   = "cachepool-store"
	ServiceManager = "cachepool-manager"
	ServiceStats   = "cachepool-stats"
	ServiceScaler  = "cachepool-scaler"

	// QueueStore is the queue group shared by key-image store instances.
	QueueStore = "cachepool-store"
)

// Headers used by binary (non-JSON) messages.
const (
	HdrKey         = "Cachepool-Key"
	HdrVersion     = "Cachepool-Version"
	HdrContentType = "Cachepool-Content-Type"
	// HdrCorrelation carries a request's correlation id from the edge into commands and events.
	HdrCorrelation = "Cachepool-Correlation-Id"
)
