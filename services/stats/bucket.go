package stats

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// source is one incarnation of one node: the scope of a report's seq.
type source struct {
	node contracts.NodeID
	inc  string
}

// nodeLast is a node's newest report within one bucket.
type nodeLast struct {
	at    time.Time
	inc   string
	seq   uint64
	items int64
	bytes int64
}

// newer reports whether a comes after b. Ties on the time are broken by seq
// then incarnation so that the outcome never depends on arrival order.
func (a nodeLast) newer(b nodeLast) bool {
	if !a.at.Equal(b.at) {
		return a.at.After(b.at)
	}
	if a.seq != b.seq {
		return a.seq > b.seq
	}
	return strings.Compare(a.inc, b.inc) > 0
}

// bucket is one time slot's running sums and the reports it has counted.
type bucket struct {
	start    int64 // unix ms
	counters contracts.Counters
	nodes    map[contracts.NodeID]nodeLast
	seen     map[source]map[uint64]struct{}
}

func newBucket(start int64) *bucket {
	return &bucket{start: start, nodes: map[contracts.NodeID]nodeLast{}, seen: map[source]map[uint64]struct{}{}}
}

func (b *bucket) has(src source, seq uint64) bool {
	_, ok := b.seen[src][seq]
	return ok
}

// add counts r; the caller has checked it is not a duplicate.
func (b *bucket) add(r contracts.NodeReport) {
	src := source{r.Node, r.Incarnation}
	if b.seen[src] == nil {
		b.seen[src] = map[uint64]struct{}{}
	}
	b.seen[src][r.Seq] = struct{}{}
	b.counters.Gets += r.Delta.Gets
	b.counters.Hits += r.Delta.Hits
	b.counters.Misses += r.Delta.Misses
	b.counters.Puts += r.Delta.Puts
	b.counters.Evictions += r.Delta.Evictions
	last := nodeLast{at: r.OccurredAt, inc: r.Incarnation, seq: r.Seq, items: r.Items, bytes: r.Bytes}
	if cur, ok := b.nodes[r.Node]; !ok || last.newer(cur) {
		b.nodes[r.Node] = last
	}
}

// point summarises the bucket. A nil bucket is an empty slot.
func point(start int64, b *bucket) contracts.StatsPoint {
	p := contracts.StatsPoint{Start: time.UnixMilli(start).UTC()}
	if b == nil {
		return p
	}
	c := b.counters
	p.Gets, p.Hits, p.Misses, p.Puts, p.Evictions = c.Gets, c.Hits, c.Misses, c.Puts, c.Evictions
	for _, n := range b.nodes {
		p.Items += n.items
		p.Bytes += n.bytes
	}
	p.Nodes = len(b.nodes)
	if c.Gets > 0 {
		miss := float64(c.Misses) / float64(c.Gets)
		hit := float64(c.Hits) / float64(c.Gets)
		p.MissRate, p.HitRate = &miss, &hit
	}
	return p
}

// record is a bucket's persisted form (one KV entry per bucket). The seen
// sequence numbers are stored as inclusive ranges.
type record struct {
	Version  int                `json:"v"`
	StartMS  int64              `json:"start_ms"`
	BucketMS int64              `json:"bucket_ms"`
	Counters contracts.Counters `json:"counters"`
	Nodes    []nodeRecord       `json:"nodes"`
	Seen     []seenRecord       `json:"seen"`
}

type nodeRecord struct {
	Node        contracts.NodeID `json:"node"`
	Incarnation string           `json:"incarnation"`
	Seq         uint64           `json:"seq"`
	At          time.Time        `json:"at"`
	Items       int64            `json:"items"`
	Bytes       int64            `json:"bytes"`
}

type seenRecord struct {
	Node        contracts.NodeID `json:"node"`
	Incarnation string           `json:"incarnation"`
	Ranges      [][2]uint64      `json:"ranges"`
}

const recordVersion = 1

func (b *bucket) record(bucketMS int64) record {
	r := record{Version: recordVersion, StartMS: b.start, BucketMS: bucketMS, Counters: b.counters}
	for id, n := range b.nodes {
		r.Nodes = append(r.Nodes, nodeRecord{Node: id, Incarnation: n.inc, Seq: n.seq, At: n.at, Items: n.items, Bytes: n.bytes})
	}
	slices.SortFunc(r.Nodes, func(a, b nodeRecord) int { return strings.Compare(string(a.Node), string(b.Node)) })
	for src, seqs := range b.seen {
		r.Seen = append(r.Seen, seenRecord{Node: src.node, Incarnation: src.inc, Ranges: toRanges(seqs)})
	}
	slices.SortFunc(r.Seen, func(a, b seenRecord) int {
		if c := strings.Compare(string(a.Node), string(b.Node)); c != 0 {
			return c
		}
		return strings.Compare(a.Incarnation, b.Incarnation)
	})
	return r
}

// maxRange bounds one stored range so that a corrupt record cannot exhaust memory.
const maxRange = 1 << 20

func fromRecord(r record) (*bucket, error) {
	if r.Version != recordVersion {
		return nil, fmt.Errorf("record version %d, want %d", r.Version, recordVersion)
	}
	b := newBucket(r.StartMS)
	b.counters = r.Counters
	for _, n := range r.Nodes {
		b.nodes[n.Node] = nodeLast{at: n.At, inc: n.Incarnation, seq: n.Seq, items: n.Items, bytes: n.Bytes}
	}
	for _, s := range r.Seen {
		set := map[uint64]struct{}{}
		for _, rg := range s.Ranges {
			if rg[0] == 0 || rg[0] > rg[1] || rg[1]-rg[0] >= maxRange {
				return nil, fmt.Errorf("bad seq range %v for %s/%s", rg, s.Node, s.Incarnation)
			}
			for q := rg[0]; ; q++ {
				set[q] = struct{}{}
				if q == rg[1] {
					break
				}
			}
		}
		b.seen[source{s.Node, s.Incarnation}] = set
	}
	return b, nil
}

// toRanges compresses a set of sequence numbers into sorted inclusive ranges.
func toRanges(set map[uint64]struct{}) [][2]uint64 {
	seqs := make([]uint64, 0, len(set))
	for q := range set {
		seqs = append(seqs, q)
	}
	slices.Sort(seqs)
	var out [][2]uint64
	for _, q := range seqs {
		if n := len(out); n > 0 && out[n-1][1]+1 == q {
			out[n-1][1] = q
			continue
		}
		out = append(out, [2]uint64{q, q})
	}
	return out
}
