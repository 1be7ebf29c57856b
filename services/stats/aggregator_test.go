package stats

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// truthPoint is a bucket's expected value, computed without the Aggregator.
type truthPoint struct {
	gets, hits, misses, puts, evictions uint64
	items, bytes                        int64
	nodes                               int
}

// genReports simulates three nodes over `minutes` one-minute buckets with
// 5s ± jitter intervals. Node n2 restarts (new incarnation, seq from 1) in the
// middle; node n3 is silent for two whole buckets. Times per node are strictly
// increasing, so "a node's last report in a bucket" is unambiguous.
func genReports(rng *rand.Rand, minutes int) []contracts.NodeReport {
	var out []contracts.NodeReport
	end := base.Add(time.Duration(minutes) * time.Minute)
	for _, node := range []contracts.NodeID{"n1", "n2", "n3"} {
		inc, seq := string(node)+"-a", uint64(0)
		restarted := false
		at := base.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		for at.Before(end) {
			if node == "n2" && !restarted && at.Sub(base) > time.Duration(minutes)*time.Minute/2 {
				inc, seq, restarted = string(node)+"-b", 0, true
			}
			silent := node == "n3" && at.Sub(base) >= 2*time.Minute && at.Sub(base) < 4*time.Minute
			if !silent {
				seq++
				gets := uint64(rng.IntN(50))
				hits := uint64(rng.IntN(int(gets) + 1))
				out = append(out, contracts.NodeReport{
					EventID: fmt.Sprintf("%s-%s-%d", node, inc, seq), OccurredAt: at,
					Node: node, Incarnation: inc, Seq: seq, IntervalMS: 5000,
					Delta: contracts.Counters{Gets: gets, Hits: hits, Misses: gets - hits, Puts: uint64(rng.IntN(10)), Evictions: uint64(rng.IntN(3))},
					Items: int64(rng.IntN(1000)), Bytes: int64(rng.IntN(1 << 20)),
				})
			}
			at = at.Add(4*time.Second + time.Duration(rng.IntN(2000))*time.Millisecond)
		}
	}
	return out
}

// truth sums unique reports per minute the simple way.
func truth(reports []contracts.NodeReport) map[time.Time]truthPoint {
	type last struct {
		at           time.Time
		items, bytes int64
	}
	sums := map[time.Time]truthPoint{}
	lasts := map[time.Time]map[contracts.NodeID]last{}
	for _, r := range reports {
		slot := r.OccurredAt.Truncate(time.Minute)
		p := sums[slot]
		p.gets += r.Delta.Gets
		p.hits += r.Delta.Hits
		p.misses += r.Delta.Misses
		p.puts += r.Delta.Puts
		p.evictions += r.Delta.Evictions
		sums[slot] = p
		if lasts[slot] == nil {
			lasts[slot] = map[contracts.NodeID]last{}
		}
		if l, ok := lasts[slot][r.Node]; !ok || r.OccurredAt.After(l.at) {
			lasts[slot][r.Node] = last{r.OccurredAt, r.Items, r.Bytes}
		}
	}
	for slot, nodes := range lasts {
		p := sums[slot]
		for _, l := range nodes {
			p.items += l.items
			p.bytes += l.bytes
		}
		p.nodes = len(nodes)
		sums[slot] = p
	}
	return sums
}

// deliveries duplicates about a third of the reports (up to 3 copies) and shuffles them.
func deliveries(rng *rand.Rand, reports []contracts.NodeReport) []contracts.NodeReport {
	var out []contracts.NodeReport
	for _, r := range reports {
		out = append(out, r)
		for range rng.IntN(3) * rng.IntN(2) {
			out = append(out, r)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// checkSeries compares a series with the truth, slot by slot.
func checkSeries(t *testing.T, s contracts.StatsSeries, want map[time.Time]truthPoint, first, last time.Time) {
	t.Helper()
	n := int(last.Sub(first)/time.Minute) + 1
	if len(s.Points) != n || len(s.Timestamps) != n || len(s.MissRate) != n || len(s.Nodes) != n {
		t.Fatalf("series has %d points (%d timestamps), want %d from %v to %v", len(s.Points), len(s.Timestamps), n, first, last)
	}
	for i, p := range s.Points {
		slot := first.Add(time.Duration(i) * time.Minute)
		w := want[slot]
		got := truthPoint{p.Gets, p.Hits, p.Misses, p.Puts, p.Evictions, p.Items, p.Bytes, p.Nodes}
		if !p.Start.Equal(slot) || !s.Timestamps[i].Equal(slot) {
			t.Errorf("point %d starts at %v (timestamp %v), want %v", i, p.Start, s.Timestamps[i], slot)
		}
		if got != w {
			t.Errorf("bucket %v = %+v, want %+v", slot.Format("15:04"), got, w)
		}
		if s.Items[i] != w.items || s.Bytes[i] != w.bytes || s.Nodes[i] != w.nodes {
			t.Errorf("bucket %v arrays: items %d bytes %d nodes %d, want %d %d %d", slot.Format("15:04"), s.Items[i], s.Bytes[i], s.Nodes[i], w.items, w.bytes, w.nodes)
		}
		if s.RequestsPerMinute[i] != float64(w.gets) {
			t.Errorf("bucket %v requests per minute %v, want %d", slot.Format("15:04"), s.RequestsPerMinute[i], w.gets)
		}
		if w.gets == 0 {
			if s.MissRate[i] != nil || s.HitRate[i] != nil {
				t.Errorf("bucket %v has rates without gets", slot.Format("15:04"))
			}
			continue
		}
		if s.MissRate[i] == nil || *s.MissRate[i] != float64(w.misses)/float64(w.gets) ||
			s.HitRate[i] == nil || *s.HitRate[i] != float64(w.hits)/float64(w.gets) {
			t.Errorf("bucket %v rates %v/%v, want misses %d hits %d of %d gets", slot.Format("15:04"), s.MissRate[i], s.HitRate[i], w.misses, w.hits, w.gets)
		}
	}
}

func TestAggregatorExactShuffledWithDuplicates(t *testing.T) {
	const minutes = 8
	for seed := range uint64(25) {
		rng := rand.New(rand.NewPCG(seed, 7))
		reports := genReports(rng, minutes)
		want := truth(reports)
		agg := NewAggregator(time.Minute, 30, 2*time.Second)
		now := base.Add(minutes*time.Minute + 3*time.Second)
		counted, restarts := 0, 0
		for _, r := range deliveries(rng, reports) {
			res := agg.Add(r, now)
			if res.Counted {
				counted++
			} else if res.Reason != "duplicate" {
				t.Fatalf("seed %d: report refused: %s", seed, res.Reason)
			}
			if res.Restart {
				restarts++
			}
		}
		if counted != len(reports) {
			t.Fatalf("seed %d: counted %d reports, want %d unique", seed, counted, len(reports))
		}
		if restarts > 1 {
			t.Errorf("seed %d: %d restarts detected, want at most the one of n2", seed, restarts)
		}
		checkSeries(t, agg.Series(now), want, base, base.Add((minutes-1)*time.Minute))
	}
}

// TestAggregatorExactWithLateArrivals feeds reports in arrival order (each
// copy delayed by up to 90s), closing buckets as time passes, so reports
// and duplicates arrive after their bucket closed and was evented.
func TestAggregatorExactWithLateArrivals(t *testing.T) {
	const minutes = 8
	for seed := range uint64(25) {
		rng := rand.New(rand.NewPCG(seed, 11))
		reports := genReports(rng, minutes)
		want := truth(reports)
		type arrival struct {
			at time.Time
			r  contracts.NodeReport
		}
		var arrivals []arrival
		for _, r := range deliveries(rng, reports) {
			arrivals = append(arrivals, arrival{r.OccurredAt.Add(time.Duration(rng.IntN(90_000)) * time.Millisecond), r})
		}
		slices.SortFunc(arrivals, func(a, b arrival) int { return a.at.Compare(b.at) })
		agg := NewAggregator(time.Minute, 30, 2*time.Second)
		restarts := 0
		evented := map[time.Time]int{}
		for _, a := range arrivals {
			for _, p := range agg.Close(a.at) {
				evented[p.Start]++
			}
			res := agg.Add(a.r, a.at)
			if !res.Counted && res.Reason != "duplicate" {
				t.Fatalf("seed %d: report refused: %s", seed, res.Reason)
			}
			if res.Restart {
				restarts++
			}
		}
		if restarts != 1 {
			t.Errorf("seed %d: %d restarts detected, want 1 (n2)", seed, restarts)
		}
		now := arrivals[len(arrivals)-1].at
		for _, p := range agg.Close(now) {
			evented[p.Start]++
		}
		last := time.UnixMilli(agg.lastComplete(now)).UTC()
		for s, n := range evented {
			if n != 1 {
				t.Errorf("seed %d: bucket %v evented %d times", seed, s, n)
			}
		}
		checkSeries(t, agg.Series(now), want, base, last)
	}
}

func TestAggregatorKeepsTheLastBuckets(t *testing.T) {
	const keep = 30
	agg := NewAggregator(time.Minute, keep, time.Second)
	report := func(i int) contracts.NodeReport {
		return contracts.NodeReport{OccurredAt: base.Add(time.Duration(i)*time.Minute + time.Second), Node: "n1", Incarnation: "x", Seq: uint64(i + 1), Delta: contracts.Counters{Gets: uint64(i + 1), Misses: 1}, Items: int64(i)}
	}
	for i := range keep {
		now := base.Add(time.Duration(i)*time.Minute + 2*time.Second)
		if res := agg.Add(report(i), now); !res.Counted {
			t.Fatalf("report %d not counted: %s", i, res.Reason)
		}
	}
	now := base.Add(keep*time.Minute + 2*time.Second) // the 30th bucket is complete
	s := agg.Series(now)
	if len(s.Points) != keep || !s.Timestamps[0].Equal(base) || s.Points[keep-1].Gets != keep {
		t.Fatalf("after %d buckets: %d points from %v, last gets %d", keep, len(s.Points), s.Timestamps[0], s.Points[len(s.Points)-1].Gets)
	}
	if res := agg.Add(report(keep), now); !res.Counted {
		t.Fatalf("31st report not counted: %s", res.Reason)
	}
	now = now.Add(time.Minute) // the 31st bucket is complete
	if gone := agg.Prune(now); !slices.Equal(gone, []int64{base.UnixMilli()}) {
		t.Errorf("prune dropped %v, want only the oldest %d", gone, base.UnixMilli())
	}
	s = agg.Series(now)
	if len(s.Points) != keep || !s.Timestamps[0].Equal(base.Add(time.Minute)) || s.Points[keep-1].Gets != keep+1 {
		t.Fatalf("after %d buckets: %d points from %v, want %d from %v", keep+1, len(s.Points), s.Timestamps[0], keep, base.Add(time.Minute))
	}
	// A late report for the dropped bucket is refused, not counted elsewhere.
	late := report(0)
	late.Seq = 100
	if res := agg.Add(late, now); res.Counted || res.Reason != "older than the kept window" {
		t.Errorf("late report for a dropped bucket: %+v", res)
	}
}

func TestPointRates(t *testing.T) {
	agg := NewAggregator(30*time.Second, 10, time.Second)
	now := base.Add(time.Minute + time.Second) // both 30s buckets are complete
	add := func(node contracts.NodeID, seq, gets, misses uint64) {
		r := contracts.NodeReport{OccurredAt: base.Add(time.Duration(seq) * time.Second), Node: node, Incarnation: "i", Seq: seq, Delta: contracts.Counters{Gets: gets, Hits: gets - misses, Misses: misses}, Items: 5}
		if res := agg.Add(r, now); !res.Counted {
			t.Fatalf("not counted: %s", res.Reason)
		}
	}
	// Σmisses/Σgets, not the mean of the nodes' rates.
	add("a", 1, 10, 1)
	add("b", 2, 30, 29)
	// A bucket with reports but no gets has no rates.
	add("a", 31, 0, 0)
	s := agg.Series(now)
	if len(s.Points) != 2 {
		t.Fatalf("%d points, want 2", len(s.Points))
	}
	if s.MissRate[0] == nil || *s.MissRate[0] != 0.75 || *s.HitRate[0] != 0.25 {
		t.Errorf("miss rate %v, want 30/40", s.MissRate[0])
	}
	if s.RequestsPerMinute[0] != 80 {
		t.Errorf("requests per minute %v with 40 gets in 30s, want 80", s.RequestsPerMinute[0])
	}
	if s.MissRate[1] != nil || s.HitRate[1] != nil || s.Nodes[1] != 1 || s.Items[1] != 5 {
		t.Errorf("idle bucket: miss %v hit %v nodes %d items %d, want nil nil 1 5", s.MissRate[1], s.HitRate[1], s.Nodes[1], s.Items[1])
	}
	if last := agg.Last(now); last.MissRate != nil || !last.Start.Equal(base.Add(30*time.Second)) {
		t.Errorf("last complete bucket %v miss %v, want the idle one", last.Start, last.MissRate)
	}
}

func TestCloseEventsEachSlotOnce(t *testing.T) {
	agg := NewAggregator(time.Minute, 5, time.Second)
	starts := func(ps []contracts.StatsPoint) []time.Time {
		var out []time.Time
		for _, p := range ps {
			out = append(out, p.Start)
		}
		return out
	}
	now := base.Add(3*time.Minute + 2*time.Second)
	if got := starts(agg.Close(now)); !slices.Equal(got, []time.Time{base.Add(2 * time.Minute)}) {
		t.Errorf("first close %v, want only the newest complete slot", got)
	}
	if got := agg.Close(now); len(got) != 0 {
		t.Errorf("second close at the same time returned %d points", len(got))
	}
	now = now.Add(2 * time.Minute)
	if got := starts(agg.Close(now)); !slices.Equal(got, []time.Time{base.Add(3 * time.Minute), base.Add(4 * time.Minute)}) {
		t.Errorf("close after two minutes %v, want the two empty slots in order", got)
	}
}

// TestRecordsRoundTrip restores the buckets from their stored records into
// a fresh aggregator (a service restart) and redelivers every report.
func TestRecordsRoundTrip(t *testing.T) {
	const minutes = 6
	rng := rand.New(rand.NewPCG(3, 3))
	reports := genReports(rng, minutes)
	now := base.Add(minutes*time.Minute + 3*time.Second)
	agg := NewAggregator(time.Minute, 30, 2*time.Second)
	for _, r := range deliveries(rng, reports) {
		agg.Add(r, now)
	}
	before := agg.Series(now)
	restored := NewAggregator(time.Minute, 30, 2*time.Second)
	for _, rec := range agg.TakeDirty() {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var back record
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if err := restored.Load(back, now); err != nil {
			t.Fatalf("load: %v", err)
		}
	}
	if len(agg.TakeDirty()) != 0 {
		t.Error("TakeDirty did not clear the dirty set")
	}
	for _, r := range reports {
		if res := restored.Add(r, now); res.Counted {
			t.Fatalf("report %s/%s/%d counted again after restore", r.Node, r.Incarnation, r.Seq)
		}
	}
	checkSeries(t, restored.Series(now), truth(reports), base, base.Add((minutes-1)*time.Minute))
	if got, _ := json.Marshal(restored.Series(now)); string(got) != string(must(json.Marshal(before))) {
		t.Error("restored series differs from the original")
	}
	if got := restored.Close(now); len(got) != 0 {
		t.Errorf("restored aggregator re-events %d closed buckets", len(got))
	}
	if err := NewAggregator(30*time.Second, 30, time.Second).Load(agg.buckets[base.UnixMilli()].record(60000), now); err == nil {
		t.Error("a bucket of another width was loaded")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestToRanges(t *testing.T) {
	set := map[uint64]struct{}{1: {}, 2: {}, 3: {}, 5: {}, 7: {}, 8: {}}
	got := toRanges(set)
	want := [][2]uint64{{1, 3}, {5, 5}, {7, 8}}
	if !slices.Equal(got, want) {
		t.Errorf("toRanges = %v, want %v", got, want)
	}
	if _, err := fromRecord(record{Version: recordVersion, Seen: []seenRecord{{Node: "a", Incarnation: "i", Ranges: [][2]uint64{{1, 1 << 40}}}}}); err == nil {
		t.Error("a huge range was accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	err := Config{Bucket: time.Millisecond, Buckets: -1, Replicas: 9}.Validate()
	for _, field := range []string{"bucket", "buckets", "replicas"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
}
