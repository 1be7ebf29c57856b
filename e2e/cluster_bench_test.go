package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
)

// Load of the edge throughput measurement.
const (
	benchClients  = 32              // concurrent HTTP clients, spread over the edges
	benchDuration = 5 * time.Second // per configuration
	benchKeys     = 64              // cached 1 KiB images
	benchImage    = 1 << 10
)

// benchImageBytes is a valid PNG padded to benchImage bytes (the edge
// sniffs the PNG signature; the padding keeps every image the same size).
func benchImageBytes(i int) []byte {
	b := pngImage(i, 4)
	if pad := benchImage - len(b); pad > 0 {
		b = append(b, bytes.Repeat([]byte{byte(i)}, pad)...)
	}
	return b
}

// throughput is what one load run measured.
type throughput struct {
	reqs, errors, misses int64
	elapsed              time.Duration
	firstError           string
}

func (r throughput) perSecond() float64 { return float64(r.reqs) / r.elapsed.Seconds() }

// getLoad runs benchClients clients for benchDuration; client i reads
// random cached keys through edges[i % len(edges)]. Every answer must be a
// 200 with the right bytes; misses count X-Cache: miss answers.
func getLoad(edges []string, keys []string, img func(string) []byte) throughput {
	tr := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: benchClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var reqs, errs, misses atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(benchDuration)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 11))
			base := edges[c%len(edges)] + "/api/image/"
			for time.Now().Before(deadline) {
				k := keys[rng.IntN(len(keys))]
				resp, err := client.Get(base + k)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || !bytes.Equal(body, img(k))) {
						err = fmt.Errorf("GET %s: %d, %d bytes", k, resp.StatusCode, len(body))
					}
					if resp.Header.Get("X-Cache") == "miss" {
						misses.Add(1)
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				reqs.Add(1)
			}
		}()
	}
	wg.Wait()
	r := throughput{reqs: reqs.Load(), errors: errs.Load(), misses: misses.Load(), elapsed: time.Since(start)}
	if s, ok := firstErr.Load().(string); ok {
		r.firstError = s
	}
	return r
}

// fillAndWarm uploads the bench keys through edge and reads each once.
func fillAndWarm(t *testing.T, edge *pool) ([]string, func(string) []byte) {
	t.Helper()
	images := map[string][]byte{}
	var keys []string
	for i := range benchKeys {
		k := fmt.Sprintf("bench-%d", i)
		images[k] = benchImageBytes(i)
		keys = append(keys, k)
		if code, env := edge.upload(t, k, images[k]); code != http.StatusOK {
			t.Fatalf("upload %s: %d %+v", k, code, env)
		}
	}
	for _, k := range keys {
		if code, got, err := edge.image(k); err != nil || code != http.StatusOK || !bytes.Equal(got, images[k]) {
			t.Fatalf("warm GET %s: %d %v", k, code, err)
		}
	}
	return keys, func(k string) []byte { return images[k] }
}

func (r throughput) check(t *testing.T, what string) {
	t.Helper()
	if r.errors > 0 {
		t.Errorf("%s: %d of %d GETs failed, first: %s", what, r.errors, r.reqs+r.errors, r.firstError)
	}
	if r.reqs < 100 {
		t.Errorf("%s: only %d GETs in %v", what, r.reqs, r.elapsed)
	}
}

// TestClusterEdgeThroughput measures edge GET hit throughput (1 KiB
// images, benchClients clients for benchDuration each) with 1, 2 and 3
// edge processes against the 3-server NATS cluster, next to `cachepool up`
// (everything in this process, one edge) in the same run. It is a
// measurement, not a check of numbers: run it on purpose with
//
//	cd e2e && CACHEPOOL_CLUSTER_BENCH=1 go test -count=1 -run TestClusterEdgeThroughput -v .
func TestClusterEdgeThroughput(t *testing.T) {
	if os.Getenv("CACHEPOOL_CLUSTER_BENCH") != "1" {
		t.Skip("set CACHEPOOL_CLUSTER_BENCH=1 to measure edge throughput on the cluster")
	}
	// `cachepool up` in this process: 2 nodes, like the cluster's pool.
	cfg := testConfig(t)
	cfg.Nodes = 2
	cfg.ReportInterval, cfg.Heartbeat = time.Second, time.Second
	up := startPool(t, cfg)
	keys, img := fillAndWarm(t, up)
	single := getLoad([]string{up.info.HTTPURL}, keys, img)
	single.check(t, "up")
	up.stop(t) // frees its CPU before the cluster starts

	cs := startClusterSystem(t)
	edges := []string{cs.edge.info.HTTPURL}
	for i := 2; i <= 3; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
		name := fmt.Sprintf("edge-%d", i)
		cs.procs[name] = startProc(t, "serve", "edge", "--nats", cs.nats.urls("edge"), "--data", t.TempDir(),
			"--http", addr, "--replicas", "3", "--log-level", "warn")
		bustest.Eventually(t, time.Minute, func() error {
			if err := cs.exited(); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s healthz %d", name, resp.StatusCode)
			}
			return nil
		})
		edges = append(edges, "http://"+addr)
	}
	keys, img = fillAndWarm(t, cs.edge)
	var rows []string
	for n := 1; n <= 3; n++ {
		r := getLoad(edges[:n], keys, img)
		r.check(t, fmt.Sprintf("%d edges", n))
		rows = append(rows, fmt.Sprintf("| %d edge process(es), 3-server cluster | %.0f | %.2f | %d |", n, r.perSecond(), r.perSecond()/single.perSecond(), r.misses))
	}
	t.Logf("edge GET hits, %d clients, %d B images, %v each:\n| setup | req/s | × up | misses |\n|---|---|---|---|\n| `up` (one process, embedded NATS) | %.0f | 1.00 | %d |\n%s",
		benchClients, benchImage, benchDuration, single.perSecond(), single.misses, strings.Join(rows, "\n"))
	if v := cs.nats.violations(); len(v) > 0 {
		t.Fatalf("the services hit permission violations:\n%s", strings.Join(v, "\n"))
	}
}
