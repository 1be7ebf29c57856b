package edge

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// healthTimeout bounds each health probe.
const healthTimeout = 2 * time.Second

// healthz answers GET /healthz: 200 when the NATS connection is up, the
// key-image store and the manager answer a micro PING on the bus, and a
// partition table is known; 503 naming every missing part otherwise. The
// checks member reports each part either way.
func (s *server) healthz(c *gin.Context) {
	checks := map[string]string{}
	var mu sync.Mutex
	set := func(k, v string) { mu.Lock(); checks[k] = v; mu.Unlock() }

	if s.nc.IsConnected() {
		set("nats", "ok")
	} else {
		set("nats", "not connected ("+s.nc.Status().String()+")")
	}
	if t := s.table.Current(); t != nil {
		set("table", fmt.Sprintf("ok (epoch %d, %d nodes)", t.Epoch, len(t.Nodes)))
	} else {
		set("table", "no partition table is known yet")
	}
	var wg sync.WaitGroup
	for name, svc := range map[string]string{"store": contracts.ServiceStore, "manager": contracts.ServiceManager} {
		wg.Go(func() {
			if _, err := s.nc.Request("$SRV.PING."+svc, nil, min(healthTimeout, s.cfg.RequestTimeout)); err != nil {
				set(name, fmt.Sprintf("%s does not answer on the bus: %v", svc, err))
				return
			}
			set(name, "ok")
		})
	}
	wg.Wait()

	var bad []string
	for _, k := range []string{"nats", "store", "manager", "table"} {
		if checks[k] != "ok" && !strings.HasPrefix(checks[k], "ok ") {
			bad = append(bad, k+": "+checks[k])
		}
	}
	if len(bad) > 0 {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{
			"success": "false",
			"error":   errorBody{Code: http.StatusServiceUnavailable, Message: "not ready: " + strings.Join(bad, "; ")},
			"checks":  checks,
		})
		return
	}
	ok(c, gin.H{"checks": checks})
}

// metricsHandler serves the private registry in the Prometheus text format.
func (s *server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})
}
