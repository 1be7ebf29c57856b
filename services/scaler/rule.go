package scaler

import (
	"fmt"
	"math"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Sample is the last complete stats bucket: its start and its pool miss
// rate (nil when it saw no gets).
type Sample struct {
	Start    time.Time
	MissRate *float64
}

// Input is everything one decision depends on.
type Input struct {
	Now      time.Time
	Mode     contracts.ModeConfig
	Nodes    int // active nodes
	MaxNodes int
	// Busy says why a resize counts as running ("" when none is).
	Busy string
	// LastResize is when the last resize completed (zero: never).
	LastResize time.Time
	Cooldown   time.Duration
	Bucket     time.Duration
	// Stats is the last complete bucket, nil when none is available.
	Stats *Sample
	// LastActed is the start of the bucket the previous command was based on
	// (zero: none); a bucket drives at most one command.
	LastActed time.Time
}

// Outcome is a decision: Action is contracts.DecisionGrow, DecisionShrink
// or DecisionNone; Target is set for grow and shrink.
type Outcome struct {
	Action string
	Target int
	Reason string
}

// eps absorbs binary rounding in n·ratio (e.g. 10 × 1.1 = 11.000000000000002,
// 100 × 0.29 = 28.999999999999996) so that ⌈⌉ and ⌊⌋ see the decimal product.
const eps = 1e-9

// GrowTarget is min(maxNodes, max(n+1, ⌈n·expand⌉)).
func GrowTarget(n, maxNodes int, expand float64) int {
	return min(maxNodes, max(n+1, int(math.Ceil(float64(n)*expand-eps))))
}

// ShrinkTarget is max(1, min(n−1, ⌊n·shrink⌋)).
func ShrinkTarget(n int, shrink float64) int {
	return max(1, min(n-1, int(math.Floor(float64(n)*shrink+eps))))
}

func none(format string, args ...any) Outcome {
	return Outcome{Action: contracts.DecisionNone, Reason: "no action: " + fmt.Sprintf(format, args...)}
}

func period(d time.Duration) string {
	if d == time.Minute {
		return "minute"
	}
	return d.String() + " bucket"
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Decide applies DESIGN.md's scaling rule. It is pure: no I/O, no clock.
func Decide(in Input) Outcome {
	p := in.Mode.Params
	switch {
	case in.Mode.Mode != contracts.ModeAutomatic:
		return none("manual mode")
	case in.Busy != "":
		return none("%s", in.Busy)
	case in.Nodes < 1:
		return none("no active nodes")
	case p.Validate() != nil:
		return none("invalid automatic parameters: %v", p.Validate())
	case !in.LastResize.IsZero() && in.Now.Before(in.LastResize.Add(in.Cooldown)):
		return none("cooldown until %s after the resize completed at %s", ts(in.LastResize.Add(in.Cooldown)), ts(in.LastResize))
	case in.Stats == nil:
		return none("no complete stats bucket")
	case in.Now.Sub(in.Stats.Start.Add(in.Bucket)) > 2*in.Bucket:
		return none("stats are stale: the last complete bucket started at %s", ts(in.Stats.Start))
	case !in.LastResize.IsZero() && in.Stats.Start.Before(in.LastResize):
		return none("waiting for a full bucket after the resize completed at %s", ts(in.LastResize))
	case !in.LastActed.IsZero() && !in.Stats.Start.After(in.LastActed):
		return none("already acted on the bucket at %s", ts(in.Stats.Start))
	case in.Stats.MissRate == nil:
		return none("no gets in the last %s", period(in.Bucket))
	}
	miss, n := *in.Stats.MissRate, in.Nodes
	switch {
	case miss > p.MaxMissRate:
		if n >= in.MaxNodes {
			return none("miss rate %.3f above max %.3f but the pool is at its maximum of %d nodes", miss, p.MaxMissRate, in.MaxNodes)
		}
		t := GrowTarget(n, in.MaxNodes, p.ExpandRatio)
		return Outcome{Action: contracts.DecisionGrow, Target: t,
			Reason: fmt.Sprintf("miss rate %.3f above max %.3f: grow %d → %d (expand ratio %g)", miss, p.MaxMissRate, n, t, p.ExpandRatio)}
	case miss < p.MinMissRate:
		if n <= 1 {
			return none("miss rate %.3f below min %.3f but the pool is at its minimum of 1 node", miss, p.MinMissRate)
		}
		t := ShrinkTarget(n, p.ShrinkRatio)
		return Outcome{Action: contracts.DecisionShrink, Target: t,
			Reason: fmt.Sprintf("miss rate %.3f below min %.3f: shrink %d → %d (shrink ratio %g)", miss, p.MinMissRate, n, t, p.ShrinkRatio)}
	}
	return none("miss rate %.3f within [%.3f, %.3f]", miss, p.MinMissRate, p.MaxMissRate)
}
