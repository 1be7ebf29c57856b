package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
)

// loadGen reads through the edge until stopped: each round reads `hits`
// cached keys and `misses` keys that exist nowhere (each a node miss).
type loadGen struct {
	stop chan struct{}
	wg   sync.WaitGroup
	n    atomic.Int64
}

func (p *pool) startLoad(hits, misses, workers int) *loadGen {
	g := &loadGen{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		g.wg.Add(1)
		go func(w int) {
			defer g.wg.Done()
			for round := 0; ; round++ {
				for i := 0; i < hits+misses; i++ {
					select {
					case <-g.stop:
						return
					default:
					}
					key := fmt.Sprintf("hot-%d", i%4)
					if i >= hits {
						key = fmt.Sprintf("absent-%d-%d-%d", w, round, i)
					}
					_, _, _ = p.image(key)
					g.n.Add(1)
				}
			}
		}(w)
	}
	return g
}

func (g *loadGen) halt() { close(g.stop); g.wg.Wait() }

func (p *pool) size(t testing.TB) int { return len(p.nodes(t).IDs) }

func (p *pool) decisions(t testing.TB) []contracts.ScalerDecision {
	t.Helper()
	code, env := p.jsonDo(t, http.MethodGet, "/api/manager/scaler/decisions", nil)
	if code != 200 {
		t.Fatalf("decisions: %d", code)
	}
	var l contracts.DecisionList
	if err := json.Unmarshal(env.Content, &l); err != nil {
		// the edge may answer the list itself or wrapped
		var d []contracts.ScalerDecision
		if err2 := json.Unmarshal(env.Content, &d); err2 != nil {
			t.Fatalf("decisions: %v / %v: %s", err, err2, env.Content)
		}
		return d
	}
	return l.Decisions
}

// TestAutoscalerGrowsOnMissesShrinksOnHitsAndHoldsSteady runs the whole
// system with one-second buckets and ticks: a steady load between the
// thresholds changes nothing, a burst of misses grows the pool to its
// bound, and a calm period of hits shrinks it back.
func TestAutoscalerGrowsOnMissesShrinksOnHitsAndHoldsSteady(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-system autoscaling")
	}
	cfg := testConfig(t)
	cfg.MaxNodes = 4
	cfg.ReportInterval = 100 * time.Millisecond
	p := startPool(t, cfg)
	for i := 0; i < 4; i++ {
		if code, _ := p.upload(t, fmt.Sprintf("hot-%d", i), pngImage(i, 4)); code != 200 {
			t.Fatalf("upload hot-%d: %d", i, code)
		}
	}
	params := map[string]float64{"max_miss_rate_threshold": 0.5, "min_miss_rate_threshold": 0.1, "expand_ratio": 2, "shrink_ratio": 0.5}
	if code, env := p.jsonDo(t, http.MethodPost, "/api/manager/poolsize/automatic", params); code != 200 {
		t.Fatalf("automatic: %d %s", code, env.Content)
	}

	// Steady: 30 % misses, between the thresholds, for several ticks.
	steady := p.startLoad(7, 3, 4)
	bustest.Eventually(t, 30*time.Second, func() error {
		n := 0
		for _, d := range p.decisions(t) {
			if d.Action == contracts.DecisionNone && d.MissRate != nil {
				n++
			}
		}
		if n < 4 {
			return fmt.Errorf("%d decisions on measured buckets so far", n)
		}
		return nil
	})
	steady.halt()
	if s := p.size(t); s != 1 {
		t.Fatalf("a steady load between the thresholds resized the pool to %d", s)
	}
	for _, d := range p.decisions(t) {
		if d.Action != contracts.DecisionNone {
			t.Fatalf("decision %s under a steady load: %s", d.Action, d.Reason)
		}
	}

	// Burst of misses: the pool grows 1 → 2 → 4 (⌈n·2⌉, bounded by 4).
	burst := p.startLoad(0, 10, 4)
	bustest.Eventually(t, 60*time.Second, func() error {
		if s := p.size(t); s != 4 {
			return fmt.Errorf("size %d, waiting for 4", s)
		}
		return nil
	})
	burst.halt()

	// Calm: hits only; the pool shrinks back to 1 (⌊n·0.5⌋).
	calm := p.startLoad(10, 0, 4)
	bustest.Eventually(t, 60*time.Second, func() error {
		if s := p.size(t); s != 1 {
			return fmt.Errorf("size %d, waiting for 1", s)
		}
		return nil
	})
	calm.halt()

	var grows, shrinks []string
	for _, d := range p.decisions(t) {
		switch d.Action {
		case contracts.DecisionGrow:
			grows = append(grows, fmt.Sprintf("%d→%d", d.Nodes, d.Target))
		case contracts.DecisionShrink:
			shrinks = append(shrinks, fmt.Sprintf("%d→%d", d.Nodes, d.Target))
		}
	}
	t.Logf("grow decisions %v, shrink decisions %v", grows, shrinks)
	if len(grows) != 2 || len(shrinks) != 2 {
		t.Errorf("want exactly 2 grow (1→2, 2→4) and 2 shrink (4→2, 2→1) decisions, got %v and %v", grows, shrinks)
	}
	// Every scaler command went through the ordered queue.
	code, env := p.jsonDo(t, http.MethodGet, "/api/manager/poolsize/requests", nil)
	if code != 200 {
		t.Fatalf("requests: %d", code)
	}
	var reqs contracts.ResizeRequestList
	if err := json.Unmarshal(env.Content, &reqs); err != nil {
		t.Fatalf("requests: %v: %s", err, env.Content)
	}
	fromScaler := 0
	for _, r := range reqs.Requests {
		if r.Command.Source == contracts.SourceScaler && r.Status == contracts.StateApplied {
			fromScaler++
		}
	}
	if fromScaler != 4 {
		t.Errorf("%d applied scaler requests in the queue, want 4", fromScaler)
	}
}
