// Package stats is cachepool's statistics service: it sums the cache nodes'
// per-interval reports into fixed time buckets (one minute by default), keeps
// the last Buckets closed buckets across its own restarts, answers series and
// rate queries, and events every bucket as it closes.
//
// Exactness: a report is identified by (node, incarnation, seq) and counted
// once however often it is delivered and in whatever order; it lands in the
// bucket of its own occurred_at, so a late report still counts in its
// bucket while that bucket is kept. A node restart is a new incarnation, so
// its fresh sequence numbers never collide with the old ones. A bucket's
// items and bytes are the sum, over the nodes that reported in it, of each
// node's last report in it; a silent node contributes nothing.
//
// The pure part is [Aggregator] (no I/O, no clock); [Run] wires it to NATS.
// Prometheus gauges are not exported here: the edge reads the series over
// the bus (services never import each other).
package stats
