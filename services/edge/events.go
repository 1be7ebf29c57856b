package edge

import (
	"bytes"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
)

// Live events (GET /api/events).
const (
	// eventsPing is how often an idle event stream gets a comment line, so
	// proxies and browsers keep it open and a gone client is noticed.
	eventsPing = 15 * time.Second
	// eventsBuffer is the channel capacity of one client's subscription:
	// when a slow client lets it fill, NATS drops further messages for that
	// subscription (reported as a slow consumer) and never blocks the
	// connection or other clients.
	eventsBuffer = 1024
	// eventsRetryMS is the reconnect delay the stream suggests to clients.
	eventsRetryMS = 3000
)

// events answers GET /api/events: every cachepool event except node
// heartbeats and node stats reports, as server-sent events.
func (s *server) events(c *gin.Context) {
	streamEvents(c, s.nc, eventsPing, s.log)
}

// skipEvent reports whether subject is too chatty for the live stream:
// node heartbeats and per-interval node reports.
func skipEvent(subject string) bool {
	return strings.Contains(subject, ".evt.heartbeat.") || strings.Contains(subject, ".evt.report.")
}

// streamEvents subscribes to contracts.EventsFilter on nc and writes each
// event as "event: <subject>\ndata: <json>\n\n" until the client goes away,
// the HTTP server shuts down, or (checked at each ping) the subscription
// ends because nc was closed or drained. A comment line is sent every ping.
// The subscription is removed before it returns. Events published before
// the subscription exists are not replayed: the stream is live only.
func streamEvents(c *gin.Context, nc *nats.Conn, ping time.Duration, log *slog.Logger) {
	// Registered before the first byte goes out: once a client sees the
	// stream open, a shutdown ends it.
	shutdown := shutdownSignal(c.Request)
	msgs := make(chan *nats.Msg, eventsBuffer)
	sub, err := nc.ChanSubscribe(contracts.EventsFilter, msgs)
	if err != nil {
		fail(c, contracts.Errorf(contracts.CodeUnavailable, "events: cannot subscribe: %v", err))
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Make sure the server knows the subscription before the first byte
	// goes out, so a client that sees the stream open sees what follows.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		fail(c, contracts.Errorf(contracts.CodeUnavailable, "events: %v", err))
		return
	}

	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering
	c.Status(http.StatusOK)
	w := c.Writer
	if _, err := w.WriteString(": cachepool events\nretry: " + strconv.Itoa(eventsRetryMS) + "\n\n"); err != nil {
		return
	}
	w.Flush()

	tick := time.NewTicker(ping)
	defer tick.Stop()
	var buf bytes.Buffer
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-shutdown:
			return
		case <-tick.C:
			if !sub.IsValid() { // nc closed or drained
				return
			}
			if _, err := w.WriteString(": ping\n\n"); err != nil {
				return
			}
			w.Flush()
		case m := <-msgs:
			if skipEvent(m.Subject) {
				continue
			}
			buf.Reset()
			writeEvent(&buf, m.Subject, m.Data)
			if _, err := w.Write(buf.Bytes()); err != nil {
				log.Debug("events: client went away", "err", err)
				return
			}
			w.Flush()
		}
	}
}

// writeEvent formats one server-sent event. Each line of data gets its own
// "data:" prefix, so a multi-line payload cannot end the event early.
func writeEvent(buf *bytes.Buffer, subject string, data []byte) {
	buf.WriteString("event: ")
	buf.WriteString(strings.NewReplacer("\r", "", "\n", "").Replace(subject))
	buf.WriteByte('\n')
	data = bytes.TrimRight(data, "\r\n")
	if len(data) == 0 {
		buf.WriteString("data:\n\n")
		return
	}
	for line := range bytes.Lines(data) {
		buf.WriteString("data: ")
		buf.Write(bytes.TrimRight(line, "\r\n"))
		buf.WriteByte('\n')
	}
	buf.WriteByte('\n')
}

// shutdowns holds, per *http.Server serving an event stream, a channel
// closed when that server starts shutting down (http.Server.Shutdown does
// not cancel the contexts of requests still running, and a stream never
// finishes by itself). An entry lives until its server shuts down.
var shutdowns sync.Map // *http.Server -> chan struct{}

// shutdownSignal returns a channel closed when the server serving r shuts
// down, or nil (never ready) when r carries no server. A stream that starts
// while its server is already shutting down is not signalled; it ends when
// the server's shutdown deadline closes its connection.
func shutdownSignal(r *http.Request) <-chan struct{} {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	ch := make(chan struct{})
	if prev, loaded := shutdowns.LoadOrStore(srv, ch); loaded {
		return prev.(chan struct{})
	}
	srv.RegisterOnShutdown(func() {
		close(ch)
		shutdowns.Delete(srv)
	})
	return ch
}
