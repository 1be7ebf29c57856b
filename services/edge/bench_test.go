package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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

// benchRates holds, per image size, the throughput (requests/s) of the
// baselines measured earlier in the same run.
var benchRates = struct {
	sync.Mutex
	gin, nats map[string]float64
}{gin: map[string]float64{}, nats: map[string]float64{}}

// runClients runs op b.N times over exactly benchClients goroutines and
// returns the throughput in operations per second. (RunParallel with
// SetParallelism gives a multiple of GOMAXPROCS goroutines; this gives
// exactly 16 on any machine.)
func runClients(b *testing.B, op func() error) float64 {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range benchClients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "req/s")
	return rate
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
// gin (a bare Gin handler returning the same bytes over the same kind of
// client) and nats (a bare NATS request-reply loop against the same node
// responder over the same in-process connection kind). The edge
// sub-benchmark reports edge/H with H = 1/(1/T_gin + 1/T_nats).
//
//	go test -run '^$' -bench BenchmarkGetHit -benchtime 2s ./
func BenchmarkGetHit(b *testing.B) {
	for _, sz := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}} {
		b.Run(sz.name, func(b *testing.B) { benchGetHit(b, sz.name, sz.n) })
	}
}

func benchGetHit(b *testing.B, name string, size int) {
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

	b.Run("gin", func(b *testing.B) {
		b.SetBytes(int64(size))
		r := runClients(b, httpGet(client, ginURL, size))
		benchRates.Lock()
		benchRates.gin[name] = r
		benchRates.Unlock()
	})
	b.Run("nats", func(b *testing.B) {
		b.SetBytes(int64(size))
		r := runClients(b, func() error {
			m, err := edgeNC.Request(subject, keyBytes, 10*time.Second)
			if err != nil {
				return err
			}
			if len(m.Data) != size {
				return fmt.Errorf("nats reply of %d bytes, want %d", len(m.Data), size)
			}
			return nil
		})
		benchRates.Lock()
		benchRates.nats[name] = r
		benchRates.Unlock()
	})
	b.Run("edge", func(b *testing.B) {
		b.SetBytes(int64(size))
		r := runClients(b, httpGet(client, edgeURL, size))
		benchRates.Lock()
		tg, tn := benchRates.gin[name], benchRates.nats[name]
		benchRates.Unlock()
		if tg > 0 && tn > 0 {
			h := 1 / (1/tg + 1/tn)
			b.ReportMetric(h, "H_req/s")
			b.ReportMetric(r/h, "edge/H")
		}
	})
}
