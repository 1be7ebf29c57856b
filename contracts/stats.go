package contracts

import (
	"fmt"
	"time"
)

// StatsPoint is one closed bucket of pool statistics. MissRate and HitRate
// are nil when the bucket saw no gets. EventID and OccurredAt are set when
// the point is evented on EvtMinute (and empty inside a StatsSeries).
type StatsPoint struct {
	EventID    string    `json:"event_id,omitempty"`
	OccurredAt time.Time `json:"occurred_at,omitzero"`
	Start      time.Time `json:"start"`
	Gets       uint64    `json:"gets"`
	Hits       uint64    `json:"hits"`
	Misses     uint64    `json:"misses"`
	Puts       uint64    `json:"puts"`
	Evictions  uint64    `json:"evictions"`
	Items      int64     `json:"items"`
	Bytes      int64     `json:"bytes"`
	Nodes      int       `json:"nodes"`
	MissRate   *float64  `json:"miss_rate"`
	HitRate    *float64  `json:"hit_rate"`
}

// StatsSeries is the per-bucket series, oldest first, in the shape of the
// manager's aggregate_stats endpoint (parallel arrays) plus the points.
type StatsSeries struct {
	BucketMS          int64        `json:"bucket_ms"`
	MissRate          []*float64   `json:"miss_rate"`
	HitRate           []*float64   `json:"hit_rate"`
	Items             []int64      `json:"number_of_items_in_cache"`
	Bytes             []int64      `json:"total_size_of_items_in_cache"`
	RequestsPerMinute []float64    `json:"number_of_requests_served_per_minute"`
	Nodes             []int        `json:"number_of_nodes"`
	Timestamps        []time.Time  `json:"timestamps"`
	Points            []StatsPoint `json:"points"`
}

// RateRequest asks for the last complete bucket's miss or hit rate.
type RateRequest struct {
	Rate string `json:"rate"` // "miss" or "hit"
}

// Validate requires "miss" or "hit".
func (r RateRequest) Validate() error {
	if r.Rate != "miss" && r.Rate != "hit" {
		return fmt.Errorf(`rate must be "miss" or "hit", got %q`, r.Rate)
	}
	return nil
}

// RateReply answers a RateRequest; Value is nil when the bucket saw no gets.
type RateReply struct {
	Rate  string    `json:"rate"`
	Value *float64  `json:"value"`
	Start time.Time `json:"start,omitempty"`
}

// ScalerDecision is one scaler tick's outcome, evented on EvtDecision.
type ScalerDecision struct {
	EventID    string    `json:"event_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Action     string    `json:"action"` // "grow", "shrink" or "none"
	Reason     string    `json:"reason"`
	MissRate   *float64  `json:"miss_rate,omitempty"`
	Nodes      int       `json:"nodes"`
	Target     int       `json:"target,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	// BucketStart is the start of the stats bucket the decision read, when it read one.
	BucketStart time.Time `json:"bucket_start,omitzero"`
}

// ScalerDecision actions.
const (
	DecisionGrow   = "grow"
	DecisionShrink = "shrink"
	DecisionNone   = "none"
)

// DecisionList is the scaler's recent decisions, newest first.
type DecisionList struct {
	Decisions []ScalerDecision `json:"decisions"`
}
