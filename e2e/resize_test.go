package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// table reads the current partition table from the pool's KV bucket.
func (p *pool) table(t testing.TB) contracts.PartitionTable {
	t.Helper()
	nc, err := nats.Connect(p.info.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, contracts.BucketPool)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, contracts.KeyTable)
	if err != nil {
		t.Fatal(err)
	}
	var tab contracts.PartitionTable
	if err := json.Unmarshal(e.Value(), &tab); err != nil {
		t.Fatal(err)
	}
	return tab
}

type nodeList struct {
	IDs   []contracts.NodeID   `json:"pool_node_list"`
	Nodes []contracts.NodeInfo `json:"nodes"`
}

func (p *pool) nodes(t testing.TB) nodeList {
	t.Helper()
	code, env := p.jsonDo(t, http.MethodGet, "/api/manager/pool_node_list", nil)
	if code != 200 {
		t.Fatalf("pool_node_list: %d %+v", code, env)
	}
	var l nodeList
	if err := json.Unmarshal(env.Content, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// fill uploads keys key-0..key-(k-1) with `workers` concurrent clients.
func (p *pool) fill(t testing.TB, k, workers int, img func(i int) []byte) {
	t.Helper()
	next := atomic.Int64{}
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= k {
					return
				}
				if err := p.uploadErr(fmt.Sprintf("key-%d", i), img(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestResizeMovesFewKeysWarmAndServesEveryRead grows 4 → 5 and shrinks
// 5 → 4 with K keys cached, under concurrent reads, and checks the moves.
func TestResizeMovesFewKeysWarmAndServesEveryRead(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-system resize with thousands of keys")
	}
	cfg := testConfig(t)
	cfg.Nodes = 4
	p := startPool(t, cfg)
	const k = 4000
	img := func(i int) []byte { return pngImage(i, 4) }
	start := time.Now()
	p.fill(t, k, 16, img)
	t.Logf("uploaded %d keys in %v", k, time.Since(start))

	countItems := func() (map[contracts.NodeID]int64, int64) {
		m := map[contracts.NodeID]int64{}
		var total int64
		for _, n := range p.nodes(t).Nodes {
			m[n.ID] = n.Items
			total += n.Items
		}
		return m, total
	}
	before := p.table(t)
	items, total := countItems()
	if total != k {
		t.Fatalf("%d items cached before the resize, want %d (every upload fills its owner)", total, k)
	}

	resize := func(change string) (moved int, newItems map[contracts.NodeID]int64) {
		t.Helper()
		from := p.table(t)
		stop := make(chan struct{})
		var reads, failures atomic.Int64
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for r := 0; r < 8; r++ {
			wg.Add(1)
			go func(seed uint64) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, 7))
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := rng.IntN(k)
					code, raw, err := p.image(fmt.Sprintf("key-%d", i))
					reads.Add(1)
					if err != nil || code != 200 {
						failures.Add(1)
						continue
					}
					if !bytes.Equal(raw, img(i)) {
						errs <- fmt.Errorf("key-%d: wrong image during resize", i)
						return
					}
				}
			}(uint64(r))
		}
		code, env := p.jsonDo(t, http.MethodPost, "/api/manager/poolsize/manual?wait=120s", map[string]string{"change": change})
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if code != 200 {
			t.Fatalf("resize %s: %d %s", change, code, env.Content)
		}
		if f := failures.Load(); float64(f) > 0.001*float64(reads.Load()) {
			t.Errorf("%d of %d reads failed during the resize (goal ≤ 0.1%%)", f, reads.Load())
		}
		t.Logf("resize %s: %d reads during the resize, %d failed", change, reads.Load(), failures.Load())
		to := p.table(t)
		for i := 0; i < k; i++ {
			key := fmt.Sprintf("key-%d", i)
			a, _, _ := from.Owner(key)
			b, _, _ := to.Owner(key)
			if a != b {
				moved++
			}
		}
		newItems, _ = countItems()
		return moved, newItems
	}

	moved, after := resize("increase")
	var added contracts.NodeID
	for id := range after {
		if _, ok := items[id]; !ok {
			added = id
		}
	}
	if added == "" || len(after) != 5 {
		t.Fatalf("no new node after 4 → 5: %v", after)
	}
	fifth := float64(k) / 5
	if float64(moved) > 1.1*fifth {
		t.Errorf("4 → 5 moved %d keys, goal ≤ %.0f", moved, 1.1*fifth)
	}
	if float64(after[added]) < 0.8*fifth {
		t.Errorf("the new node received %d keys, goal ≥ %.0f", after[added], 0.8*fifth)
	}
	var sum, maxLoad int64
	for _, n := range after {
		sum += n
		maxLoad = max(maxLoad, n)
	}
	if mean := float64(sum) / 5; float64(maxLoad)/mean > 1.10 {
		t.Errorf("max/mean load %.3f after 4 → 5, goal ≤ 1.10 (%v)", float64(maxLoad)/mean, after)
	}
	if sum != k {
		t.Errorf("%d items cached after 4 → 5, want %d: migration lost or duplicated keys", sum, k)
	}
	t.Logf("4 → 5: moved %d keys (K/5 = %.0f), new node holds %d, max/mean %.3f, table epoch %d → %d",
		moved, fifth, after[added], float64(maxLoad)/(float64(sum)/5), before.Epoch, p.table(t).Epoch)

	moved, back := resize("decrease")
	if len(back) != 4 {
		t.Fatalf("5 → 4 left %d nodes", len(back))
	}
	if float64(moved) > 1.1*fifth {
		t.Errorf("5 → 4 moved %d keys, goal ≤ %.0f", moved, 1.1*fifth)
	}
	sum = 0
	for _, n := range back {
		sum += n
	}
	if sum != k {
		t.Errorf("%d items cached after 5 → 4, want %d: the leaving node did not drain", sum, k)
	}
	t.Logf("5 → 4: moved %d keys", moved)
}

// TestFiftyConcurrentResizesAllEndInOrder fires 50 manual requests at a
// pool of 1 with at most 3 nodes: every request ends, the final size is the
// serial replay of the applied ones, and bound violations are rejected
// with a reason.
func TestFiftyConcurrentResizesAllEndInOrder(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxNodes = 3
	p := startPool(t, cfg)
	const n = 50
	type result struct {
		code  int
		state contracts.ResizeRequestState
		err   error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			change := "increase"
			if i%3 == 0 {
				change = "decrease"
			}
			body, _ := json.Marshal(map[string]string{"change": change})
			req, _ := http.NewRequest(http.MethodPost, p.info.HTTPURL+"/api/manager/poolsize/manual?wait=120s", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := p.http.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			var env struct {
				Content contracts.ResizeRequestState `json:"content"`
				Error   struct{ Message string }     `json:"error"`
			}
			err = json.NewDecoder(resp.Body).Decode(&env)
			results <- result{code: resp.StatusCode, state: env.Content, err: err}
		}(i)
	}
	wg.Wait()
	close(results)
	var all []contracts.ResizeRequestState
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		switch r.state.Status {
		case contracts.StateApplied:
			if r.code != 200 {
				t.Errorf("applied answered %d", r.code)
			}
		case contracts.StateRejected:
			if r.code != 409 || r.state.Reason == "" {
				t.Errorf("rejected answered %d with reason %q", r.code, r.state.Reason)
			}
		default:
			t.Fatalf("request %s not terminal: %q (HTTP %d)", r.state.RequestID, r.state.Status, r.code)
		}
		all = append(all, r.state)
	}
	// Serial replay in queue (stream sequence) order.
	bySeq := map[uint64]contracts.ResizeRequestState{}
	for _, s := range all {
		if s.Sequence == 0 {
			t.Fatalf("request %s has no queue sequence", s.RequestID)
		}
		if _, dup := bySeq[s.Sequence]; dup {
			t.Fatalf("two requests share sequence %d", s.Sequence)
		}
		bySeq[s.Sequence] = s
	}
	size := 1
	applied := 0
	for seq := uint64(0); len(bySeq) > 0; seq++ {
		s, ok := bySeq[seq]
		if !ok {
			continue
		}
		delete(bySeq, seq)
		want := size + s.Command.Change
		inBounds := want >= 1 && want <= cfg.MaxNodes
		if inBounds != (s.Status == contracts.StateApplied) {
			t.Fatalf("seq %d: size %d, change %+d → %s (%s)", seq, size, s.Command.Change, s.Status, s.Reason)
		}
		if inBounds {
			size = want
			applied++
		}
	}
	if got := len(p.nodes(t).IDs); got != size {
		t.Fatalf("pool has %d nodes, serial replay says %d", got, size)
	}
	t.Logf("%d requests: %d applied, %d rejected, final size %d", n, applied, n-applied, size)
}
