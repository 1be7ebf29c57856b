package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// benchPool starts a system for a benchmark (b is a testing.TB too).
func benchPool(b *testing.B, nodes int, migration bool) *pool {
	cfg := testConfig(b)
	cfg.Nodes = nodes
	cfg.Migration = migration
	cfg.CapacityMB = 256
	return startPool(b, cfg)
}

// nodeMisses sums the misses counters of every node.
func nodeMisses(ctx context.Context, nc *nats.Conn, ids []contracts.NodeID) uint64 {
	var sum uint64
	for _, id := range ids {
		st, err := bus.Request[contracts.NodeStats](ctx, nc, contracts.NodeStatsSubject(id), nil)
		if err == nil {
			sum += st.Counters.Misses
		}
	}
	return sum
}

// BenchmarkMigration4to5 measures keys and bytes per second moved during a
// 4 → 5 resize with 64 KiB images, next to a bare NATS request-reply loop
// moving the same payloads in the same run. Run with -benchtime 1x.
func BenchmarkMigration4to5(b *testing.B) {
	const k, size = 1000, 64 << 10
	for b.Loop() {
		b.StopTimer()
		p := benchPool(b, 4, true)
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 31)
		}
		img := func(i int) []byte {
			out := append(pngImage(i, 4), payload[:size-200]...)
			return out
		}
		p.fill(b, k, 16, img)
		nc, err := nats.Connect(p.info.NATSURL)
		if err != nil {
			b.Fatal(err)
		}
		progress := make(chan contracts.MigrationProgress, 1024)
		sub, _ := nc.Subscribe(contracts.EvtMigration, func(m *nats.Msg) {
			var mp contracts.MigrationProgress
			if jsonUnmarshalOK(m.Data, &mp) {
				progress <- mp
			}
		})
		b.StartTimer()
		start := time.Now()
		code, env := p.jsonDo(b, http.MethodPost, "/api/manager/poolsize/manual?wait=300s", map[string]string{"change": "increase"})
		elapsed := time.Since(start)
		b.StopTimer()
		_ = sub.Unsubscribe()
		if code != 200 {
			b.Fatalf("resize: %d %s", code, env.Content)
		}
		var last contracts.MigrationProgress
		for len(progress) > 0 {
			last = <-progress
		}
		if last.MovedKeys == 0 {
			b.Fatalf("no migration progress evented")
		}
		keysPerSec := float64(last.MovedKeys) / elapsed.Seconds()
		bytesPerSec := float64(last.MovedBytes) / elapsed.Seconds()

		// Baseline: a bare request-reply loop of the same payloads.
		echo, _ := nc.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
		nc2, _ := nats.Connect(p.info.NATSURL)
		n := int(last.MovedKeys)
		bstart := time.Now()
		for i := 0; i < n; i++ {
			if _, err := nc2.Request("bench.echo", payload, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		base := time.Since(bstart)
		_ = echo.Unsubscribe()
		nc2.Close()
		nc.Close()
		baseBytesPerSec := float64(n*size) / base.Seconds()
		b.ReportMetric(keysPerSec, "keys/s")
		b.ReportMetric(bytesPerSec/(1<<20), "MiB/s")
		b.ReportMetric(baseBytesPerSec/(1<<20), "bare-MiB/s")
		b.ReportMetric(bytesPerSec/baseBytesPerSec, "ratio")
		b.Logf("moved %d keys (%d bytes) in %v (whole resize); bare request-reply of %d × 64 KiB took %v",
			last.MovedKeys, last.MovedBytes, elapsed, n, base)
		p.stop(b)
		b.StartTimer()
	}
}

// BenchmarkResizeMissSpike counts node misses during a 4 → 5 resize and
// the 3 s after it, under a steady read load of cached keys, with warm
// migration and without it.
// Run with -benchtime 1x.
func BenchmarkResizeMissSpike(b *testing.B) {
	for _, migration := range []bool{true, false} {
		b.Run(fmt.Sprintf("migration=%v", migration), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				const k = 2000
				p := benchPool(b, 4, migration)
				p.fill(b, k, 16, func(i int) []byte { return pngImage(i, 4) })
				nc, err := nats.Connect(p.info.NATSURL)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				stop := make(chan struct{})
				var reads atomic.Int64
				var wg sync.WaitGroup
				for r := 0; r < 8; r++ {
					wg.Add(1)
					go func(seed uint64) {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(seed, 3))
						for {
							select {
							case <-stop:
								return
							default:
							}
							_, _, _ = p.image(fmt.Sprintf("key-%d", rng.IntN(k)))
							reads.Add(1)
						}
					}(uint64(r))
				}
				ids := p.table(b).Nodes
				before := nodeMisses(ctx, nc, ids)
				readsBefore := reads.Load()
				b.StartTimer()
				code, _ := p.jsonDo(b, http.MethodPost, "/api/manager/poolsize/manual?wait=300s", map[string]string{"change": "increase"})
				b.StopTimer()
				// Keep reading for a fixed window after the resize: cold moved
				// keys show up as misses on their first read.
				time.Sleep(3 * time.Second)
				close(stop)
				wg.Wait()
				if code != 200 {
					b.Fatalf("resize: %d", code)
				}
				ids = p.table(b).Nodes
				after := nodeMisses(ctx, nc, ids)
				nc.Close()
				misses := float64(after - before)
				b.ReportMetric(misses, "misses")
				b.ReportMetric(misses/float64(reads.Load()-readsBefore), "miss-rate")
				p.stop(b)
				b.StartTimer()
			}
		})
	}
}

func jsonUnmarshalOK(b []byte, v any) bool { return json.Unmarshal(b, v) == nil }
