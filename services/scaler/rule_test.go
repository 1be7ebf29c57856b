package scaler

import (
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

func f(v float64) *float64 { return &v }

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// in returns a healthy automatic-mode input with n nodes whose last
// complete bucket (12:00–12:01) had the given miss rate, decided at 12:01:05.
func in(n int, miss *float64, p contracts.AutoParams) Input {
	return Input{
		Now:      t0.Add(time.Minute + 5*time.Second),
		Mode:     contracts.ModeConfig{Mode: contracts.ModeAutomatic, Params: p},
		Nodes:    n,
		MaxNodes: 8,
		Cooldown: time.Minute,
		Bucket:   time.Minute,
		Stats:    &Sample{Start: t0, MissRate: miss},
	}
}

func params(maxMiss, minMiss, expand, shrink float64) contracts.AutoParams {
	return contracts.AutoParams{MaxMissRate: maxMiss, MinMissRate: minMiss, ExpandRatio: expand, ShrinkRatio: shrink}
}

func TestDecide(t *testing.T) {
	def := contracts.DefaultAutoParams // max 0.6, min 0.4, ×2, ×0.5
	tests := []struct {
		name   string
		in     Input
		action string
		target int
		reason string // a substring of the reason
	}{
		{"grow doubles", in(2, f(0.9), def), contracts.DecisionGrow, 4, "above max"},
		{"grow capped at max nodes", in(5, f(0.9), def), contracts.DecisionGrow, 8, "grow 5 → 8"},
		{"grow at max nodes", in(8, f(0.9), def), contracts.DecisionNone, 0, "at its maximum of 8"},
		{"grow above max nodes is no shrink", in(9, f(0.9), def), contracts.DecisionNone, 0, "at its maximum"},
		{"grow at least one node", in(1, f(0.9), params(0.6, 0.4, 1.01, 0.5)), contracts.DecisionGrow, 2, ""},
		{"grow ceil 1.5 odd", in(3, f(0.9), params(0.6, 0.4, 1.5, 0.5)), contracts.DecisionGrow, 5, "grow 3 → 5"},                                                       // ⌈4.5⌉
		{"grow ceil 1.5 even", in(2, f(0.9), params(0.6, 0.4, 1.5, 0.5)), contracts.DecisionGrow, 3, "grow 2 → 3"},                                                      // ⌈3⌉
		{"grow ceil 1.1 no float drift", func() Input { i := in(10, f(0.9), params(0.6, 0.4, 1.1, 0.5)); i.MaxNodes = 16; return i }(), contracts.DecisionGrow, 11, ""}, // 10×1.1 = 11.000000000000002
		{"grow with lower manager max", func() Input { i := in(3, f(0.9), def); i.MaxNodes = 4; return i }(), contracts.DecisionGrow, 4, ""},
		{"shrink halves", in(6, f(0.1), def), contracts.DecisionShrink, 3, "below min"},
		{"shrink floor 0.3", in(7, f(0.1), params(0.6, 0.4, 2, 0.3)), contracts.DecisionShrink, 2, "shrink 7 → 2"},   // ⌊2.1⌋
		{"shrink floor 0.3 to one", in(3, f(0.1), params(0.6, 0.4, 2, 0.3)), contracts.DecisionShrink, 1, ""},        // ⌊0.9⌋ → max 1
		{"shrink 0.3 exact product", in(10, f(0.1), params(0.6, 0.4, 2, 0.3)), contracts.DecisionShrink, 3, ""},      // 10×0.3 = 3.0000000000000004
		{"shrink 0.7 float drift", in(10, f(0.1), params(0.6, 0.4, 2, 0.7)), contracts.DecisionShrink, 7, ""},        // 10×0.7 = 7.000000000000001
		{"shrink 0.29 float drift", in(100, f(0.1), params(0.6, 0.4, 2, 0.29)), contracts.DecisionShrink, 29, ""},    // 100×0.29 = 28.999999999999996
		{"shrink at least one node", in(4, f(0.1), params(0.6, 0.4, 2, 0.9)), contracts.DecisionShrink, 3, ""},       // ⌊3.6⌋ = 3 = n−1
		{"shrink at least one node 0.99", in(2, f(0.1), params(0.6, 0.4, 2, 0.99)), contracts.DecisionShrink, 1, ""}, // ⌊1.98⌋ = 1
		{"shrink at one node", in(1, f(0.0), def), contracts.DecisionNone, 0, "at its minimum of 1 node"},
		{"within thresholds", in(3, f(0.5), def), contracts.DecisionNone, 0, "within"},
		{"exactly max is no grow", in(3, f(0.6), def), contracts.DecisionNone, 0, "within"},
		{"exactly min is no shrink", in(3, f(0.4), def), contracts.DecisionNone, 0, "within"},
		{"min zero never shrinks", in(3, f(0), params(0.6, 0, 2, 0.5)), contracts.DecisionNone, 0, "within"},
		{"no gets is no action", in(4, nil, def), contracts.DecisionNone, 0, "no gets in the last minute"},
		{"no gets with short buckets", func() Input {
			i := in(4, nil, def)
			i.Bucket = time.Second
			i.Now = t0.Add(1500 * time.Millisecond)
			return i
		}(), contracts.DecisionNone, 0, "no gets in the last 1s bucket"},
		{"manual mode", func() Input { i := in(2, f(0.9), def); i.Mode.Mode = contracts.ModeManual; return i }(), contracts.DecisionNone, 0, "no action: manual mode"},
		{"resize running", func() Input { i := in(2, f(0.9), def); i.Busy = "a resize is queued or running (1 pending)"; return i }(), contracts.DecisionNone, 0, "1 pending"},
		{"cooldown", func() Input { i := in(2, f(0.9), def); i.LastResize = t0.Add(30 * time.Second); return i }(), contracts.DecisionNone, 0, "cooldown until"},
		{"after cooldown but bucket predates resize", func() Input {
			i := in(2, f(0.9), def)
			i.LastResize, i.Cooldown = t0.Add(time.Second), time.Second
			return i
		}(), contracts.DecisionNone, 0, "waiting for a full bucket"},
		{"first full bucket after resize", func() Input {
			i := in(2, f(0.9), def)
			i.LastResize = t0.Add(-10 * time.Second)
			return i
		}(), contracts.DecisionGrow, 4, ""},
		{"no stats", func() Input { i := in(2, f(0.9), def); i.Stats = nil; return i }(), contracts.DecisionNone, 0, "no complete stats bucket"},
		{"stale stats", func() Input { i := in(2, f(0.9), def); i.Now = t0.Add(4 * time.Minute); return i }(), contracts.DecisionNone, 0, "stale"},
		{"bucket already acted on", func() Input { i := in(2, f(0.9), def); i.LastActed = t0; return i }(), contracts.DecisionNone, 0, "already acted"},
		{"next bucket after acting", func() Input { i := in(2, f(0.9), def); i.LastActed = t0.Add(-time.Minute); return i }(), contracts.DecisionGrow, 4, ""},
		{"no active nodes", in(0, f(0.9), def), contracts.DecisionNone, 0, "no active nodes"},
		{"invalid parameters", in(2, f(0.9), params(0.6, 0.4, 0.5, 0.5)), contracts.DecisionNone, 0, "expand_ratio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.in)
			if got.Action != tt.action || got.Target != tt.target {
				t.Errorf("Decide = %s %d (%s), want %s %d", got.Action, got.Target, got.Reason, tt.action, tt.target)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", got.Reason, tt.reason)
			}
			if got.Action == contracts.DecisionNone && !strings.HasPrefix(got.Reason, "no action: ") {
				t.Errorf("no-action reason %q lacks the prefix", got.Reason)
			}
		})
	}
}

// TestTargetsAgainstDecimalArithmetic checks the targets for every n and a
// range of ratios against integer arithmetic on hundredths (no float drift).
func TestTargetsAgainstDecimalArithmetic(t *testing.T) {
	for n := 1; n <= 64; n++ {
		for r := 101; r <= 400; r++ { // expand 1.01 .. 4.00
			ceil := (n*r + 99) / 100
			want := min(64, max(n+1, ceil))
			if got := GrowTarget(n, 64, float64(r)/100); got != want && n < 64 {
				t.Fatalf("GrowTarget(%d, ×%.2f) = %d, want %d", n, float64(r)/100, got, want)
			}
		}
		for r := 1; r <= 99; r++ { // shrink 0.01 .. 0.99
			want := max(1, min(n-1, n*r/100))
			if got := ShrinkTarget(n, float64(r)/100); got != want {
				t.Fatalf("ShrinkTarget(%d, ×%.2f) = %d, want %d", n, float64(r)/100, got, want)
			}
		}
	}
}
