package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
)

// benchClients is the number of concurrent clients of every GET benchmark.
const benchClients = 16

// Each contender runs in short slices, interleaved (gin, nats, edge, gin,
// …) so that a noisy neighbour on a shared machine hits all three alike;
// the median slice of each is reported.
const (
	benchSlice  = 250 * time.Millisecond
	benchRounds = 7
)

// measure runs op over exactly benchClients goroutines for d and returns
// the throughput in operations per second. (RunParallel with SetParallelism
// gives a multiple of GOMAXPROCS goroutines; this gives exactly 16 on any
// machine.)
func measure(d time.Duration, op func() error) (float64, error) {
	var done atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range benchClients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := op(); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return 0, *err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}}
}

// httpGet returns an op that GETs url and checks the status and length.
func httpGet(client *http.Client, url string, size int) func() error {
	return func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || n != int64(size) {
			return fmt.Errorf("GET %s: status %d, %d bytes, want 200 and %d", url, resp.StatusCode, n, size)
		}
		return nil
	}
}

// serveLoopback serves h on a loopback listener until the benchmark ends.
func serveLoopback(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String()
}

// BenchmarkGetHit measures GET /api/image/<key> hit throughput through the
// edge at 16 concurrent clients, next to its two baselines in the same run:
// gin (a bare Gin handler returning the same bytes, same client and
// loopback setup) and nats (a bare NATS request-reply loop against the same
// node responder, over the same kind of in-process connection). It reports
// the median throughput of each (gin_req/s, nats_req/s, edge_req/s),
// H = 1/(1/T_gin + 1/T_nats) and edge/H; ns/op is the time per edge
// request at the measured throughput. One b.N iteration is one set of
// interleaved rounds.
//
//	go test -run '^$' -bench BenchmarkGetHit ./
func BenchmarkGetHit(b *testing.B) {
	for _, sz := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}} {
		b.Run(sz.name, func(b *testing.B) { benchGetHit(b, sz.n) })
	}
}

func benchGetHit(b *testing.B, size int) {
	img := pngBytes(size)
	key := "bench-key"
	srv := bustest.RunServer(b)
	respNC := bustest.ConnectInProcess(b, srv) // the fake node
	edgeNC := bustest.ConnectInProcess(b, srv) // the edge's (and the nats baseline's) connection

	// One node owns every partition; it answers every get with img, as a hit.
	table := contracts.PartitionTable{Epoch: 1, Partitions: 16, Nodes: []contracts.NodeID{"n1"}}
	for range 16 {
		table.Owners = append(table.Owners, "n1")
	}
	writeTable(b, respNC, table)
	hdr := nats.Header{contracts.HdrContentType: {"image/png"}, contracts.HdrVersion: {"1"}}
	sub, err := respNC.Subscribe(contracts.NodeGet("n1"), func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: hdr, Data: img})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })

	edgeURL := startEdge(b, edgeNC, Config{MaxImageBytes: 8 << 20}) + "/api/image/" + key

	g := gin.New()
	g.GET("/api/image/*key", func(c *gin.Context) { c.Data(http.StatusOK, "image/png", img) })
	ginURL := serveLoopback(b, g) + "/api/image/" + key

	client := benchClient()
	b.Cleanup(client.CloseIdleConnections)
	subject := contracts.NodeGet("n1")
	keyBytes := []byte(key)
	contenders := []struct {
		name string
		op   func() error
	}{
		{"gin", httpGet(client, ginURL, size)},
		{"nats", func() error {
			m, err := edgeNC.Request(subject, keyBytes, 10*time.Second)
			if err != nil {
				return err
			}
			if len(m.Data) != size {
				return fmt.Errorf("nats reply of %d bytes, want %d", len(m.Data), size)
			}
			return nil
		}},
		{"edge", httpGet(client, edgeURL, size)},
	}
	// Warm up: connections, buffers, the subject cache.
	for _, c := range contenders {
		if _, err := measure(benchSlice/5, c.op); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
	}

	rates := make([][]float64, len(contenders))
	b.ResetTimer()
	for range b.N {
		for range benchRounds {
			for i, c := range contenders {
				r, err := measure(benchSlice, c.op)
				if err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
				rates[i] = append(rates[i], r)
			}
		}
	}
	b.StopTimer()
	tGin, tNats, tEdge := median(rates[0]), median(rates[1]), median(rates[2])
	h := 1 / (1/tGin + 1/tNats)
	b.ReportMetric(tGin, "gin_req/s")
	b.ReportMetric(tNats, "nats_req/s")
	b.ReportMetric(tEdge, "edge_req/s")
	b.ReportMetric(h, "H_req/s")
	b.ReportMetric(tEdge/h, "edge/H")
	b.ReportMetric(1e9/tEdge, "ns/op")
}
