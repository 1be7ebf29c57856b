package edge

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Bus operation labels of cachepool_edge_bus_errors_total: the subject
// without its node id, so the label set stays bounded.
const (
	opNodeGet        = "node.get"
	opStorePut       = "store.put"
	opStoreLoad      = "store.load"
	opStoreList      = "store.list"
	opStoreClearAll  = "store.clear_all"
	opPool           = "pool"
	opStats          = "stats"
	opScaler         = "scaler"
	unmatchedRoute   = "unmatched"
	metricsNamespace = "cachepool_edge"
)

// metrics are the edge's Prometheus collectors, in a private registry.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	hits      prometheus.Counter
	misses    prometheus.Counter
	busErrors *prometheus.CounterVec
	pool      *poolGauges
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route template, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "http_request_duration_seconds",
			Help:    "HTTP request latency, by route template and status.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "status"}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "cache_hits_total",
			Help: "Image reads answered by the owner cache node.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "cache_misses_total",
			Help: "Image reads that fell back to the key-image store (node miss or node error).",
		}),
		busErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "bus_errors_total",
			Help: "Failed bus requests, by operation (subject without node id) and wire code. A cache miss (404 from a node) is not an error.",
		}, []string{"op", "code"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.hits, m.misses, m.busErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.pool = newPoolGauges(m.reg)
	return m
}

// statusText holds the label text of statuses 0..599, so labelling a
// request does not allocate.
var statusText = func() (t [600]string) {
	for s := range t {
		t[s] = strconv.Itoa(s)
	}
	return t
}()

func statusLabel(s int) string {
	if s >= 0 && s < len(statusText) {
		return statusText[s]
	}
	return strconv.Itoa(s)
}

// middleware counts every request and observes its latency once the
// handlers (and recovery) have written the answer.
func (m *metrics) middleware(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = unmatchedRoute
	}
	status := statusLabel(c.Writer.Status())
	m.requests.WithLabelValues(route, c.Request.Method, status).Inc()
	m.latency.WithLabelValues(route, status).Observe(time.Since(start).Seconds())
}

// busError counts one failed bus request.
func (m *metrics) busError(op string, code int) {
	m.busErrors.WithLabelValues(op, statusLabel(code)).Inc()
}
