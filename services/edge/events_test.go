package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
)

// sseEvent is one parsed server-sent event; Comment is set for ": ..." lines.
type sseEvent struct {
	Name, Data, Comment string
}

// readSSE parses the stream r into events on out until r ends; it never
// touches testing.T (it runs off the test goroutine) and closes out at the end.
func readSSE(r io.Reader, out chan<- sseEvent) {
	defer close(out)
	sc := bufio.NewScanner(r)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				out <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			out <- sseEvent{Comment: strings.TrimSpace(line[1:])}
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		case line == "data:":
			data = append(data, "")
		}
	}
}

// sseServer serves streamEvents (with the given ping) on a loopback
// http.Server and returns its base URL and the server.
func sseServer(t *testing.T, nc *nats.Conn, ping time.Duration) (string, *http.Server) {
	t.Helper()
	e := gin.New()
	e.GET("/api/events", func(c *gin.Context) { streamEvents(c, nc, ping, testLogger()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), srv
}

// openStream GETs url and returns the parsed events and a cancel that
// closes the connection.
func openStream(t *testing.T, url string) (<-chan sseEvent, *http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	out := make(chan sseEvent, 64)
	go readSSE(resp.Body, out)
	return out, resp, cancel
}

// nextEvent returns the next non-comment event, or fails after timeout.
func nextEvent(t *testing.T, events <-chan sseEvent, timeout time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, open := <-events:
			if !open {
				t.Fatal("event stream ended")
			}
			if ev.Comment != "" {
				continue
			}
			return ev
		case <-deadline:
			t.Fatalf("no event within %v", timeout)
		}
	}
}

func TestEventsStreamsEventsAndSkipsHeartbeatsAndReports(t *testing.T) {
	srv := bustest.RunServer(t)
	edgeNC := bustest.ConnectInProcess(t, srv)
	pub := bustest.Connect(t, srv)
	base, _ := sseServer(t, edgeNC, time.Hour)

	events, resp, _ := openStream(t, base+"/api/events")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type = %q, want text/event-stream", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control = %q, want no-cache", cc)
	}

	// The stream subscribes before it answers, so everything published now
	// reaches it, in the publisher's order.
	hb, _ := json.Marshal(contracts.Heartbeat{Node: "n1", Incarnation: "i1", OccurredAt: time.Now().UTC(), Items: 3})
	report, _ := json.Marshal(contracts.NodeReport{EventID: "r1", Node: "n1", Seq: 1})
	state := contracts.ResizeRequestState{EventID: "e1", OccurredAt: time.Now().UTC(), RequestID: "req-1", Status: contracts.StateApplied, FromSize: 1, ToSize: 2}
	body, _ := json.Marshal(state)
	decision, _ := json.Marshal(contracts.ScalerDecision{EventID: "e2", Action: contracts.DecisionNone, Reason: "no gets"})
	for _, m := range []struct {
		subject string
		data    []byte
	}{
		{contracts.NodeHeartbeat("n1"), hb},
		{contracts.NodeReportSubject("n1"), report},
		{contracts.EvtRequest, body},
		{contracts.NodeHeartbeat("n2"), hb},
		{contracts.EvtDecision, decision},
		{"cachepool.v1.pool.req.status", []byte(`{}`)}, // not an event: not streamed
		{contracts.EvtCleared, []byte(`{"what":"cache"}`)},
	} {
		if err := pub.Publish(m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}

	ev := nextEvent(t, events, 10*time.Second)
	if ev.Name != contracts.EvtRequest {
		t.Fatalf("first event = %q, want %q (heartbeats and reports must be skipped)", ev.Name, contracts.EvtRequest)
	}
	var got contracts.ResizeRequestState
	if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
		t.Fatalf("data %q: %v", ev.Data, err)
	}
	if got.RequestID != "req-1" || got.Status != contracts.StateApplied || got.ToSize != 2 {
		t.Errorf("data = %+v, want the published request state", got)
	}
	if ev := nextEvent(t, events, 10*time.Second); ev.Name != contracts.EvtDecision || ev.Data != string(decision) {
		t.Errorf("second event = %+v, want the decision %s", ev, decision)
	}
	if ev := nextEvent(t, events, 10*time.Second); ev.Name != contracts.EvtCleared || ev.Data != `{"what":"cache"}` {
		t.Errorf("third event = %+v, want the cleared event", ev)
	}
}

func TestEventsPingsAndUnsubscribesWhenTheClientGoes(t *testing.T) {
	srv := bustest.RunServer(t)
	edgeNC := bustest.ConnectInProcess(t, srv)
	base, _ := sseServer(t, edgeNC, 20*time.Millisecond)
	if n := edgeNC.NumSubscriptions(); n != 0 {
		t.Fatalf("subscriptions before any stream = %d", n)
	}

	events, _, hangUp := openStream(t, base+"/api/events")
	pings := 0
	deadline := time.After(10 * time.Second)
	for pings < 2 {
		select {
		case ev := <-events:
			if ev.Comment == "ping" {
				pings++
			}
		case <-deadline:
			t.Fatalf("saw %d pings within 10s, want 2", pings)
		}
	}
	if n := edgeNC.NumSubscriptions(); n != 1 {
		t.Errorf("subscriptions while streaming = %d, want 1", n)
	}

	hangUp()
	bustest.Eventually(t, 10*time.Second, func() error {
		if n := edgeNC.NumSubscriptions(); n != 0 {
			return bustest.Errorf("subscriptions after the client left = %d, want 0", n)
		}
		return nil
	})
}

func TestEventsEndWhenTheServerShutsDown(t *testing.T) {
	srv := bustest.RunServer(t)
	edgeNC := bustest.ConnectInProcess(t, srv)
	base, httpSrv := sseServer(t, edgeNC, time.Hour)
	events, _, _ := openStream(t, base+"/api/events")
	// Wait for the opening comment: the handler is running.
	select {
	case ev := <-events:
		if ev.Comment == "" {
			t.Fatalf("first item = %+v, want the opening comment", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no opening comment")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an open stream: %v (the stream must end on shutdown)", err)
	}
	for range events { // the stream ends: readSSE closes the channel
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if n := edgeNC.NumSubscriptions(); n != 0 {
			return bustest.Errorf("subscriptions after shutdown = %d, want 0", n)
		}
		return nil
	})
}

func TestEventsAnswer503WhenTheConnectionIsClosed(t *testing.T) {
	srv := bustest.RunServer(t)
	edgeNC := bustest.Connect(t, srv)
	base, _ := sseServer(t, edgeNC, time.Hour)
	edgeNC.Close()
	resp, err := http.Get(base + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Success string `json:"success"`
		Error   struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || env.Success != "false" || env.Error.Code != 503 {
		t.Errorf("status %d, envelope %+v; want a 503 envelope", resp.StatusCode, env)
	}
}

func TestWriteEventPrefixesEveryDataLine(t *testing.T) {
	cases := []struct {
		subject string
		data    string
		want    string
	}{
		{"cachepool.v1.pool.evt.node", `{"node":"n1"}`, "event: cachepool.v1.pool.evt.node\ndata: {\"node\":\"n1\"}\n\n"},
		{"a.evt.b", "{\n  \"x\": 1\n}\n", "event: a.evt.b\ndata: {\ndata:   \"x\": 1\ndata: }\n\n"},
		{"a.evt.b", "line1\r\nline2", "event: a.evt.b\ndata: line1\ndata: line2\n\n"},
		{"a.evt.b", "", "event: a.evt.b\ndata:\n\n"},
		{"a.evt\nx", "1", "event: a.evtx\ndata: 1\n\n"},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		writeEvent(&buf, c.subject, []byte(c.data))
		if buf.String() != c.want {
			t.Errorf("writeEvent(%q, %q) = %q, want %q", c.subject, c.data, buf.String(), c.want)
		}
		// Round trip through the parser.
		out := make(chan sseEvent, 4)
		readSSE(&buf, out)
		ev := <-out
		if want := strings.ReplaceAll(strings.TrimRight(c.data, "\n"), "\r", ""); ev.Data != want {
			t.Errorf("parsed data %q, want %q", ev.Data, want)
		}
	}
}

func TestSkipEvent(t *testing.T) {
	for subject, want := range map[string]bool{
		contracts.NodeHeartbeat("n1"):     true,
		contracts.NodeReportSubject("n1"): true,
		contracts.EvtRequest:              false,
		contracts.EvtMinute:               false,
		contracts.EvtDecision:             false,
		contracts.NodeAnnounce:            false,
	} {
		if got := skipEvent(subject); got != want {
			t.Errorf("skipEvent(%q) = %v, want %v", subject, got, want)
		}
	}
}

// TestEventsRouteOnTheEdge runs the whole edge (Run) and reads an event from
// GET /api/events, then checks that cancelling Run with the stream still open
// returns nil and ends the stream.
func TestEventsRouteOnTheEdge(t *testing.T) {
	srv := bustest.RunServer(t)
	edgeNC := bustest.Connect(t, srv)
	pub := bustest.Connect(t, srv)
	writeTable(t, pub, twoNodeTable(1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, edgeNC, Config{Listener: ln}, testLogger()) }()
	base := "http://" + ln.Addr().String()

	bustest.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	events, _, _ := openStream(t, base+"/api/events")
	node, _ := json.Marshal(contracts.NodeEvent{EventID: "e1", OccurredAt: time.Now().UTC(), Node: "n3", Kind: contracts.NodeJoined})
	if err := pub.Publish(contracts.EvtNode, node); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events, 10*time.Second); ev.Name != contracts.EvtNode || ev.Data != string(node) {
		t.Fatalf("event = %+v, want %s %s", ev, contracts.EvtNode, node)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v with a stream open, want nil", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for range events { // ends: the stream closed with the server
	}
}
