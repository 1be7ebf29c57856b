package manager

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func BenchmarkRebalance(b *testing.B) {
	nodes := ids(8)
	owners := grown(256, nodes[:7])
	b.ReportAllocs()
	for b.Loop() {
		_ = Rebalance(owners, nodes)
	}
}

// BenchmarkQueueNoop measures the resize queue's own cost per command: a
// manual request answered once applied, for a target equal to the current
// size (publish, queued record, decision and outcome compare-and-sets,
// running and applied records, ack). Compare with BenchmarkBareQueue.
func BenchmarkQueueNoop(b *testing.B) {
	e := newEnv(b, nil)
	e.start()
	bustest.Eventually(b, 20*time.Second, e.settled(1))
	i := 0
	for b.Loop() {
		i++
		rec, err := call[contracts.ResizeRequestState](b, e.client, contracts.PoolResize, contracts.ResizeRequest{RequestID: fmt.Sprintf("b%d", i), Target: 1, WaitMS: 10000})
		if err != nil || rec.Status != contracts.StateApplied {
			b.Fatalf("%+v %v", rec, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkQueueResize is BenchmarkQueueNoop with real work: every command
// moves the pool between 2 and 3 fake nodes (launch, configure, two table
// epochs, handoffs of an empty cache, drain and terminate).
func BenchmarkQueueResize(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.InitialNodes = 2 })
	e.start()
	bustest.Eventually(b, 20*time.Second, e.settled(2))
	i := 0
	for b.Loop() {
		i++
		rec, err := call[contracts.ResizeRequestState](b, e.client, contracts.PoolResize, contracts.ResizeRequest{RequestID: fmt.Sprintf("b%d", i), Target: 2 + i%2, WaitMS: 10000})
		if err != nil || rec.Status != contracts.StateApplied {
			b.Fatalf("%+v %v", rec, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkBareQueue is the baseline: the same stream settings (file,
// sync-always server, dedup ids) and a max-ack-pending-1 consumer whose
// handler only acks with confirmation; the publisher waits for each ack.
func BenchmarkBareQueue(b *testing.B) {
	srv := bustest.RunServer(b)
	nc := bustest.Connect(b, srv)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BARE", Subjects: []string{"bare"}, Storage: jetstream.FileStorage, Duplicates: DuplicateWindow}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "BARE", jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1})
	if err != nil {
		b.Fatal(err)
	}
	acked := make(chan struct{}, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.DoubleAck(ctx)
		acked <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	i := 0
	for b.Loop() {
		i++
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "bare", Data: []byte(`{"target":1}`)}, jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
		<-acked
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}
