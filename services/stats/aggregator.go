package stats

import (
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Aggregator sums node reports into buckets. It does no I/O and reads no
// clock: every time-dependent call takes now. It is not safe for concurrent
// use; the service guards it with a mutex.
//
// Slot arithmetic is on unix milliseconds: a report at t lands in the slot
// starting at ⌊t/bucket⌋·bucket. A slot is complete once now ≥ its end +
// grace. The kept window is the last `keep` complete slots; reports for older
// slots are refused, reports for any slot in the window (closed or not) are
// counted in it.
type Aggregator struct {
	bucketMS   int64
	graceMS    int64
	keep       int
	buckets    map[int64]*bucket
	dirty      map[int64]struct{}
	lastClosed int64 // newest slot already returned by Close; -1 before the first
	latest     map[contracts.NodeID]nodeLast
}

// AddResult says what Add did with a report.
type AddResult struct {
	Counted bool   // the report was new and is now in its bucket
	Restart bool   // the report starts a newer incarnation of a known node
	Reason  string // why it was not counted
}

// NewAggregator returns an empty aggregator keeping keep buckets of the given width.
func NewAggregator(width time.Duration, keep int, grace time.Duration) *Aggregator {
	return &Aggregator{
		bucketMS:   max(width.Milliseconds(), 1),
		graceMS:    grace.Milliseconds(),
		keep:       max(keep, 1),
		buckets:    map[int64]*bucket{},
		dirty:      map[int64]struct{}{},
		lastClosed: -1,
		latest:     map[contracts.NodeID]nodeLast{},
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func (a *Aggregator) slotOf(t time.Time) int64 {
	return floorDiv(t.UnixMilli(), a.bucketMS) * a.bucketMS
}

// lastComplete is the start of the newest complete slot at now.
func (a *Aggregator) lastComplete(now time.Time) int64 {
	return floorDiv(now.UnixMilli()-a.graceMS-a.bucketMS, a.bucketMS) * a.bucketMS
}

// windowStart is the start of the oldest kept slot at now.
func (a *Aggregator) windowStart(now time.Time) int64 {
	return a.lastComplete(now) - int64(a.keep-1)*a.bucketMS
}

// Add counts r once. Duplicates (same node, incarnation and seq as a
// counted report in any kept bucket), reports older than the kept window and
// reports implausibly far in the future are not counted.
func (a *Aggregator) Add(r contracts.NodeReport, now time.Time) AddResult {
	if err := r.Validate(); err != nil {
		return AddResult{Reason: "invalid report: " + err.Error()}
	}
	s := a.slotOf(r.OccurredAt)
	if s < a.windowStart(now) {
		return AddResult{Reason: "older than the kept window"}
	}
	if s > a.slotOf(now)+int64(a.keep)*a.bucketMS {
		return AddResult{Reason: "occurred_at is too far in the future"}
	}
	src := source{r.Node, r.Incarnation}
	for _, b := range a.buckets {
		if b.has(src, r.Seq) {
			return AddResult{Reason: "duplicate"}
		}
	}
	res := AddResult{Counted: true}
	cur := nodeLast{at: r.OccurredAt, inc: r.Incarnation, seq: r.Seq}
	if prev, ok := a.latest[r.Node]; !ok || cur.newer(prev) {
		res.Restart = ok && prev.inc != r.Incarnation
		a.latest[r.Node] = cur
	}
	b := a.buckets[s]
	if b == nil {
		b = newBucket(s)
		a.buckets[s] = b
	}
	b.add(r)
	a.dirty[s] = struct{}{}
	return res
}

// Close returns the slots that became complete since the previous call,
// oldest first (empty slots included, at most keep of them). The first call
// returns only the newest complete slot.
func (a *Aggregator) Close(now time.Time) []contracts.StatsPoint {
	last := a.lastComplete(now)
	from := last
	if a.lastClosed >= 0 {
		from = max(a.lastClosed+a.bucketMS, a.windowStart(now))
	}
	var out []contracts.StatsPoint
	for s := from; s <= last; s += a.bucketMS {
		out = append(out, point(s, a.buckets[s]))
	}
	if last > a.lastClosed {
		a.lastClosed = last
	}
	return out
}

// Prune forgets the buckets that left the kept window and returns their starts.
func (a *Aggregator) Prune(now time.Time) []int64 {
	ws := a.windowStart(now)
	var gone []int64
	for s := range a.buckets {
		if s < ws {
			delete(a.buckets, s)
			delete(a.dirty, s)
			gone = append(gone, s)
		}
	}
	for id, n := range a.latest {
		if a.slotOf(n.at) < ws {
			delete(a.latest, id)
		}
	}
	return gone
}

// Series returns the complete slots of the kept window, oldest first, from
// the oldest slot holding data through the newest complete slot; empty slots
// in between are zero points. It is empty when the window holds no data.
func (a *Aggregator) Series(now time.Time) contracts.StatsSeries {
	last, ws := a.lastComplete(now), a.windowStart(now)
	first := int64(-1)
	for s := range a.buckets {
		if s >= ws && s <= last && (first < 0 || s < first) {
			first = s
		}
	}
	out := contracts.StatsSeries{
		BucketMS:          a.bucketMS,
		MissRate:          []*float64{},
		HitRate:           []*float64{},
		Items:             []int64{},
		Bytes:             []int64{},
		RequestsPerMinute: []float64{},
		Nodes:             []int{},
		Timestamps:        []time.Time{},
		Points:            []contracts.StatsPoint{},
	}
	if first < 0 {
		return out
	}
	perMinute := float64(time.Minute.Milliseconds()) / float64(a.bucketMS)
	for s := first; s <= last; s += a.bucketMS {
		p := point(s, a.buckets[s])
		out.Points = append(out.Points, p)
		out.MissRate = append(out.MissRate, p.MissRate)
		out.HitRate = append(out.HitRate, p.HitRate)
		out.Items = append(out.Items, p.Items)
		out.Bytes = append(out.Bytes, p.Bytes)
		out.RequestsPerMinute = append(out.RequestsPerMinute, float64(p.Gets)*perMinute)
		out.Nodes = append(out.Nodes, p.Nodes)
		out.Timestamps = append(out.Timestamps, p.Start)
	}
	return out
}

// Last returns the newest complete slot's point (a zero point when it holds no data).
func (a *Aggregator) Last(now time.Time) contracts.StatsPoint {
	s := a.lastComplete(now)
	return point(s, a.buckets[s])
}

// TakeDirty returns the records of the buckets changed since the previous
// call and forgets that they changed.
func (a *Aggregator) TakeDirty() []record {
	out := make([]record, 0, len(a.dirty))
	for s := range a.dirty {
		if b := a.buckets[s]; b != nil {
			out = append(out, b.record(a.bucketMS))
		}
	}
	clear(a.dirty)
	return out
}

// MarkDirty marks slots to be written again (after a failed write).
func (a *Aggregator) MarkDirty(starts ...int64) {
	for _, s := range starts {
		if a.buckets[s] != nil {
			a.dirty[s] = struct{}{}
		}
	}
}

// Load restores a persisted bucket. Buckets of another width are refused.
// Loading marks every restored slot that is complete at now as already
// closed, so a restart does not event them again.
func (a *Aggregator) Load(r record, now time.Time) error {
	if r.BucketMS != a.bucketMS {
		return errBucketWidth
	}
	b, err := fromRecord(r)
	if err != nil {
		return err
	}
	a.buckets[b.start] = b
	for id, n := range b.nodes {
		if prev, ok := a.latest[id]; !ok || n.newer(prev) {
			a.latest[id] = n
		}
	}
	if last := a.lastComplete(now); b.start <= last && b.start > a.lastClosed {
		a.lastClosed = b.start
	}
	return nil
}
