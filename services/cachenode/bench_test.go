package cachenode_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/cachenode"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startBenchNodes runs nodes on one in-process connection to a fresh server
// and returns an in-process client connection.
func startBenchNodes(b *testing.B, ids ...contracts.NodeID) (*server.Server, *nats.Conn) {
	srv := bustest.RunServer(b)
	nodeConn := bustest.ConnectInProcess(b, srv)
	nc := bustest.ConnectInProcess(b, srv)
	announced := collect[contracts.NodeAnnouncement](b, nc, contracts.NodeAnnounce)
	for _, id := range ids {
		start(b, nodeConn, announced, cachenode.Config{ID: id, CapacityMB: 512})
	}
	return srv, nc
}

// bareResponder answers every request on subject with reply and the same
// headers a node's get sends: the floor of a request over NATS.
func bareResponder(b *testing.B, nc *nats.Conn, subject string, reply []byte) {
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Data: reply, Header: nats.Header{
			contracts.HdrVersion:     {"1"},
			contracts.HdrContentType: {"image/png"},
		}})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = nc.Flush()
}

// BenchmarkGetOverNATS measures a node get hit over in-process NATS
// connections next to a bare request-reply responder returning the same
// bytes, with one client and with 16 concurrent clients.
func BenchmarkGetOverNATS(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		value := make([]byte, size)
		_, nc := startBenchNodes(b, "bench")
		put(b, nc, "bench", "img", 1, value)
		bareResponder(b, nc, "bench.bare", value)
		for _, target := range []struct{ name, subject string }{
			{"node", contracts.NodeGet("bench")},
			{"bare", "bench.bare"},
		} {
			get := func() error {
				msg, err := bus.RequestMsg(context.Background(), nc, &nats.Msg{Subject: target.subject, Data: []byte("img")})
				if err == nil && len(msg.Data) != size {
					err = fmt.Errorf("got %d bytes, want %d", len(msg.Data), size)
				}
				return err
			}
			b.Run(fmt.Sprintf("size=%dKiB/%s", size>>10, target.name), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if err := get(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("size=%dKiB/%s-16clients", size>>10, target.name), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.SetParallelism(16 / max(1, testingCPUs()))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := get(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func testingCPUs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkHandoff measures moving 64 KiB entries from one node to another
// in acknowledged batches (reported as keys/s), next to a bare loop of
// acknowledged 1 MiB requests carrying the same bytes.
func BenchmarkHandoff(b *testing.B) {
	const keys, size = 256, 64 << 10
	_, nc := startBenchNodes(b, "from", "to")
	entries := make([]contracts.Entry, keys)
	for i := range entries {
		entries[i] = contracts.Entry{Key: fmt.Sprintf("img-%04d", i), Version: 1, ContentType: "image/png", Value: make([]byte, size)}
	}
	fill := func() {
		for i := 0; i < keys; i += 8 {
			body := contracts.EncodeBatch(entries[i : i+8])
			if _, err := bus.RequestMsg(context.Background(), nc, &nats.Msg{Subject: contracts.NodePutBatch("from"), Data: body}); err != nil {
				b.Fatal(err)
			}
		}
		request[contracts.ClearReply](b, nc, contracts.NodeClear("to"), nil)
	}
	b.Run("node", func(b *testing.B) {
		var moved int
		var spent time.Duration
		for b.Loop() {
			b.StopTimer()
			fill()
			b.StartTimer()
			t0 := time.Now()
			hr := request[contracts.HandoffReply](b, nc, contracts.NodeHandoff("from"), contracts.HandoffRequest{
				Target: "to", Partitions: []int{0}, PartitionCount: 1, Delete: true,
			})
			spent += time.Since(t0)
			if hr.Keys != keys {
				b.Fatalf("moved %d keys, want %d", hr.Keys, keys)
			}
			moved += hr.Keys
		}
		b.ReportMetric(float64(moved)/spent.Seconds(), "keys/s")
		b.ReportMetric(float64(moved)*size/spent.Seconds()/1e6, "MB/s")
	})
	b.Run("bare", func(b *testing.B) {
		body := contracts.EncodeBatch(entries[:15]) // ≈ one 1 MiB batch
		bareResponder(b, nc, "bench.bare.batch", []byte(`{"stored":15,"skipped":0}`))
		var moved int
		start := time.Now()
		for b.Loop() {
			if _, err := bus.RequestMsg(context.Background(), nc, &nats.Msg{Subject: "bench.bare.batch", Data: body}); err != nil {
				b.Fatal(err)
			}
			moved += 15
		}
		spent := time.Since(start)
		b.ReportMetric(float64(moved)/spent.Seconds(), "keys/s")
		b.ReportMetric(float64(moved)*size/spent.Seconds()/1e6, "MB/s")
	})
}
