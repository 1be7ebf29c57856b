package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

func TestRunServerFallsBackWhenDefaultPortTaken(t *testing.T) {
	// Hold 4222 ourselves if nobody does, so the test never depends on the machine.
	if l, err := net.Listen("tcp", "127.0.0.1:4222"); err == nil {
		defer l.Close()
	}
	srv, err := bus.RunServer(bus.ServerConfig{StoreDir: t.TempDir(), MaxPayload: bus.PayloadFor(8 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	addr := srv.Addr().(*net.TCPAddr)
	if addr.Port == 4222 {
		t.Fatalf("server took the busy port 4222")
	}
	nc, err := bus.Connect(context.Background(), srv.ClientURL(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := bus.CheckMaxPayload(nc, 8<<20); err != nil {
		t.Fatalf("payload for 8 MiB images: %v", err)
	}
	if err := bus.CheckMaxPayload(nc, 32<<20); err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("32 MiB images should not fit: %v", err)
	}
}

type echoReq struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func (r echoReq) Validate() error {
	if r.Name == "" {
		return errors.New("name is empty")
	}
	return nil
}

type echoResp struct {
	Greeting string `json:"greeting"`
}

func startEcho(t *testing.T, nc *nats.Conn) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{Name: "echo", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	h := bus.JSON(context.Background(), time.Second, func(ctx context.Context, r echoReq) (echoResp, error) {
		switch r.Name {
		case "missing":
			return echoResp{}, contracts.Errorf(contracts.CodeNotFound, "no %s", r.Name)
		case "boom":
			return echoResp{}, errors.New("boom")
		case "slow":
			<-ctx.Done()
			return echoResp{}, ctx.Err()
		}
		return echoResp{Greeting: "hello " + r.Name}, nil
	})
	if err := svc.AddEndpoint("echo", h, micro.WithEndpointSubject("test.echo")); err != nil {
		t.Fatal(err)
	}
}

func TestJSONEndpointAndRequestErrorMapping(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	startEcho(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	got, err := bus.Request[echoResp](ctx, nc, "test.echo", echoReq{Name: "ann"})
	if err != nil || got.Greeting != "hello ann" {
		t.Fatalf("got %+v, %v", got, err)
	}
	cases := []struct {
		name string
		body string
		code int
		msg  string
	}{
		{"validation", `{"name":""}`, 400, "name is empty"},
		{"unknown field", `{"name":"a","x":1}`, 400, "unknown field"},
		{"wrong type", `{"name":"a","n":"7"}`, 400, "field n must be a int"},
		{"broken JSON", `{"name":`, 400, "invalid JSON"},
		{"trailing", `{"name":"a"} {}`, 400, "trailing"},
		{"app code", `{"name":"missing"}`, 404, "no missing"},
		{"plain error", `{"name":"boom"}`, 500, "boom"},
		{"deadline", `{"name":"slow"}`, 504, "deadline"},
	}
	for _, tc := range cases {
		_, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: "test.echo", Data: []byte(tc.body)})
		var ce *contracts.Error
		if !errors.As(err, &ce) || ce.Code != tc.code || !strings.Contains(ce.Message, tc.msg) {
			t.Errorf("%s: got %v, want code %d containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
	_, err = bus.Request[echoResp](ctx, nc, "test.nobody", nil)
	var ce *contracts.Error
	if !errors.As(err, &ce) || ce.Code != contracts.CodeUnavailable {
		t.Fatalf("no responders: got %v, want 503", err)
	}
}

func TestWatchTableFollowsEpochs(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	view := bus.NewTableView()
	if err := bus.WatchTable(ctx, js, view, nil); err != nil {
		t.Fatal(err)
	}
	if view.Current() != nil {
		t.Fatal("table before any was written")
	}
	kv, err := js.KeyValue(ctx, contracts.BucketPool)
	if err != nil {
		t.Fatal(err)
	}
	put := func(epoch uint64, owner contracts.NodeID) {
		tab := contracts.PartitionTable{Epoch: epoch, Partitions: 2, Owners: []contracts.NodeID{owner, owner}, Nodes: []contracts.NodeID{owner}}
		b, _ := json.Marshal(tab)
		if _, err := kv.Put(ctx, contracts.KeyTable, b); err != nil {
			t.Fatal(err)
		}
	}
	changed := view.Changed()
	put(1, "a")
	bustest.Eventually(t, 5*time.Second, func() error {
		if c := view.Current(); c == nil || c.Epoch != 1 {
			return errors.New("epoch 1 not seen")
		}
		return nil
	})
	select {
	case <-changed:
	default:
		t.Fatal("Changed channel not closed on update")
	}
	if _, err := kv.Put(ctx, contracts.KeyTable, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	put(2, "b")
	bustest.Eventually(t, 5*time.Second, func() error {
		if c := view.Current(); c == nil || c.Epoch != 2 || c.Owners[0] != "b" {
			return errors.New("epoch 2 not seen")
		}
		return nil
	})
	// A late watcher starts from the stored table.
	view2 := bus.NewTableView()
	if err := bus.WatchTable(ctx, js, view2, nil); err != nil {
		t.Fatal(err)
	}
	if c := view2.Current(); c == nil || c.Epoch != 2 {
		t.Fatalf("late watcher got %+v", c)
	}
}

func TestConnectGivesUpOnContextWhenNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := bus.Connect(ctx, url, "nobody", nil); err == nil {
		t.Fatal("connected to nothing")
	}
}

func TestDetachAnswersAfterTheHandlerReturns(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	svc, err := micro.AddService(nc, micro.Config{Name: "late", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	h := micro.HandlerFunc(func(r micro.Request) {
		d := bus.Detach(nc, r)
		go func() {
			if string(d.Data()) == "fail" {
				bus.RespondError(d, contracts.Errorf(contracts.CodeConflict, "no %s", d.Subject()))
				return
			}
			_ = d.RespondJSON(echoResp{Greeting: "late " + string(d.Data())})
		}()
	})
	if err := svc.AddEndpoint("late", h, micro.WithEndpointSubject("test.late")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		reply, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: "test.late", Data: []byte("x")})
		if err != nil || string(reply.Data) != `{"greeting":"late x"}` {
			t.Fatalf("got %v %v", reply, err)
		}
		_, err = bus.RequestMsg(ctx, nc, &nats.Msg{Subject: "test.late", Data: []byte("fail")})
		var ce *contracts.Error
		if !errors.As(err, &ce) || ce.Code != contracts.CodeConflict || ce.Message != "no test.late" {
			t.Fatalf("got %v", err)
		}
	}
}

func TestClearNodesSumsAndNamesTheSilentOnes(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv)
	for id, items := range map[contracts.NodeID]int64{"a": 3, "b": 4} {
		if _, err := nc.Subscribe(contracts.NodeClear(id), func(m *nats.Msg) {
			b, _ := json.Marshal(contracts.ClearReply{Items: items, Bytes: items * 10})
			_ = m.Respond(b)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sum, err := bus.ClearNodes(context.Background(), nc, []contracts.NodeID{"a", "b", "gone", "also-gone"}, time.Second)
	if sum.Items != 7 || sum.Bytes != 70 || sum.Nodes != 2 {
		t.Fatalf("sum %+v", sum)
	}
	if err == nil || !strings.Contains(err.Error(), "node also-gone: ") || !strings.Contains(err.Error(), "node gone: ") ||
		strings.Index(err.Error(), "also-gone") > strings.Index(err.Error(), "node gone") {
		t.Fatalf("error %v should name both silent nodes in id order", err)
	}
	if _, err := bus.ClearNodes(context.Background(), nc, []contracts.NodeID{"a"}, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestRetryRidesOutTransientErrorsOnly(t *testing.T) {
	calls := 0
	err := bus.Retry(context.Background(), nil, func(context.Context) error {
		calls++
		if calls < 3 {
			return fmt.Errorf("read: %w", nats.ErrNoResponders)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("transient: %v after %d calls", err, calls)
	}
	calls = 0
	boom := errors.New("corrupt entry")
	if err := bus.Retry(context.Background(), nil, func(context.Context) error { calls++; return boom }); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("permanent: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bus.Retry(ctx, nil, func(context.Context) error { return nats.ErrTimeout }); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("cancelled: %v", err)
	}
}
