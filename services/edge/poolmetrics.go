package edge

import (
	"encoding/json"
	"math"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// poolGauges mirror the stats service's last closed bucket, so /metrics
// shows the pool's aggregates next to the edge's own counters. Rates are
// NaN for a bucket without gets.
type poolGauges struct {
	missRate, hitRate, gets, items, bytes, nodes prometheus.Gauge
}

func newPoolGauges(reg *prometheus.Registry) *poolGauges {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "cachepool_pool", Name: name, Help: help})
	}
	p := &poolGauges{
		missRate: g("miss_rate", "Miss rate of the pool in the last closed stats bucket (NaN without gets)."),
		hitRate:  g("hit_rate", "Hit rate of the pool in the last closed stats bucket (NaN without gets)."),
		gets:     g("bucket_gets", "Gets served by the pool in the last closed stats bucket."),
		items:    g("items", "Items cached in the pool at the end of the last closed stats bucket."),
		bytes:    g("bytes", "Bytes cached in the pool at the end of the last closed stats bucket."),
		nodes:    g("nodes", "Nodes that reported in the last closed stats bucket."),
	}
	for _, c := range []prometheus.Gauge{p.missRate, p.hitRate, p.gets, p.items, p.bytes, p.nodes} {
		c.Set(math.NaN())
		reg.MustRegister(c)
	}
	return p
}

func rateOrNaN(r *float64) float64 {
	if r == nil {
		return math.NaN()
	}
	return *r
}

func (p *poolGauges) set(pt contracts.StatsPoint) {
	p.missRate.Set(rateOrNaN(pt.MissRate))
	p.hitRate.Set(rateOrNaN(pt.HitRate))
	p.gets.Set(float64(pt.Gets))
	p.items.Set(float64(pt.Items))
	p.bytes.Set(float64(pt.Bytes))
	p.nodes.Set(float64(pt.Nodes))
}

// watchPool keeps the gauges equal to the latest minute event until the
// subscription is removed.
func (p *poolGauges) watchPool(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(contracts.EvtMinute, func(m *nats.Msg) {
		var pt contracts.StatsPoint
		if json.Unmarshal(m.Data, &pt) == nil {
			p.set(pt)
		}
	})
}
