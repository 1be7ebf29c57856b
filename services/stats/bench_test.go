package stats

import (
	"fmt"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// BenchmarkAggregatorAdd counts reports into a full 30-bucket window of 8
// nodes (the dedupe check looks at every kept bucket). Compare with
// BenchmarkBaselineMapInsert, the floor for remembering one seen report.
func BenchmarkAggregatorAdd(b *testing.B) {
	agg := NewAggregator(time.Minute, 30, 2*time.Second)
	nodes := make([]contracts.NodeID, 8)
	for i := range nodes {
		nodes[i] = contracts.NodeID(fmt.Sprintf("node-%d", i))
	}
	now := base.Add(30 * time.Minute)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		node := nodes[i%8]
		seq := uint64(i/8 + 1)
		at := base.Add(time.Duration(seq%360) * 5 * time.Second)
		r := contracts.NodeReport{OccurredAt: at, Node: node, Incarnation: fmt.Sprint(seq / 360), Seq: seq, Delta: contracts.Counters{Gets: 10, Hits: 7, Misses: 3}, Items: 100}
		agg.Add(r, now)
	}
}

func BenchmarkBaselineMapInsert(b *testing.B) {
	seen := map[source]map[uint64]struct{}{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		src := source{contracts.NodeID(fmt.Sprintf("node-%d", i%8)), fmt.Sprint(i / 8 / 360)}
		if seen[src] == nil {
			seen[src] = map[uint64]struct{}{}
		}
		seen[src][uint64(i/8+1)] = struct{}{}
	}
}
