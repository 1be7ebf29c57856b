package manager

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// registry is the manager's live view of nodes, fed by heartbeats,
// readiness announcements and clean-stop announcements. It is safe for
// concurrent use. It persists nothing: after a restart, heartbeats rebuild it
// within one interval.
type registry struct {
	silentAfter time.Duration
	kick        func() // asks the actor to reconcile
	// adopt makes every heartbeating node a standby candidate (standby
	// provisioning: a node that started before the manager announced
	// itself to nobody, but its heartbeats register it).
	adopt bool

	mu       sync.Mutex
	lastSeen map[contracts.NodeID]time.Time
	standby  map[contracts.NodeID]bool // announced with Standby=true
	gone     map[contracts.NodeID]bool // announced a clean stop, not ready since
	ready    map[contracts.NodeID]chan struct{}
}

func newRegistry(silentAfter time.Duration, adopt bool, kick func()) *registry {
	return &registry{
		silentAfter: silentAfter,
		kick:        kick,
		adopt:       adopt,
		lastSeen:    map[contracts.NodeID]time.Time{},
		standby:     map[contracts.NodeID]bool{},
		gone:        map[contracts.NodeID]bool{},
		ready:       map[contracts.NodeID]chan struct{}{},
	}
}

// subscribe starts feeding the registry from nc; the returned
// subscriptions are the caller's to unsubscribe.
func (r *registry) subscribe(nc *nats.Conn) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	add := func(subject string, h nats.MsgHandler) error {
		s, err := nc.Subscribe(subject, h)
		if err == nil {
			subs = append(subs, s)
		}
		return err
	}
	err := add(contracts.NodeHeartbeatFilter(), func(m *nats.Msg) {
		var hb contracts.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil && hb.Node.Valid() == nil {
			r.seen(hb.Node)
		}
	})
	if err == nil {
		err = add(contracts.NodeAnnounce, func(m *nats.Msg) {
			var a contracts.NodeAnnouncement
			if json.Unmarshal(m.Data, &a) == nil && a.Node.Valid() == nil {
				r.announced(a.Node, a.Standby)
			}
		})
	}
	if err == nil {
		err = add(contracts.NodeGone, func(m *nats.Msg) {
			var a contracts.NodeAnnouncement
			if json.Unmarshal(m.Data, &a) == nil && a.Node.Valid() == nil {
				r.stopped(a.Node)
			}
		})
	}
	if err != nil {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return nil, err
	}
	return subs, nil
}

func (r *registry) seen(id contracts.NodeID) {
	r.mu.Lock()
	_, known := r.lastSeen[id]
	r.lastSeen[id] = time.Now()
	if r.adopt {
		r.standby[id] = true
	}
	standby := r.standby[id]
	r.mu.Unlock()
	if !known && standby {
		r.kick()
	}
}

func (r *registry) announced(id contracts.NodeID, standby bool) {
	r.mu.Lock()
	r.lastSeen[id] = time.Now()
	delete(r.gone, id)
	if standby {
		r.standby[id] = true
	}
	ch := r.readyChan(id)
	select {
	case <-ch:
	default:
		close(ch)
	}
	r.mu.Unlock()
	if standby {
		r.kick()
	}
}

func (r *registry) stopped(id contracts.NodeID) {
	r.mu.Lock()
	r.gone[id] = true
	delete(r.ready, id)
	r.mu.Unlock()
	r.kick()
}

// readyChan returns the channel closed when id announces readiness. Call with mu held.
func (r *registry) readyChan(id contracts.NodeID) chan struct{} {
	ch, ok := r.ready[id]
	if !ok {
		ch = make(chan struct{})
		r.ready[id] = ch
	}
	return ch
}

// expect forgets any earlier readiness of id and returns the channel closed
// at its next announcement. Call it before launching id.
func (r *registry) expect(id contracts.NodeID) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ready, id)
	delete(r.gone, id)
	return r.readyChan(id)
}

// touch counts now as a sign of life of ids (a node joining the table, or
// the table's nodes when the manager starts), so silence is measured from now.
func (r *registry) touch(ids ...contracts.NodeID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for _, id := range ids {
		if t, ok := r.lastSeen[id]; !ok || t.Before(now) {
			r.lastSeen[id] = now
		}
		delete(r.gone, id)
	}
}

// failed returns those of ids that announced a clean stop or were silent
// for longer than silentAfter.
func (r *registry) failed(ids []contracts.NodeID) []contracts.NodeID {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []contracts.NodeID
	for _, id := range ids {
		t, ok := r.lastSeen[id]
		if r.gone[id] || !ok || now.Sub(t) > r.silentAfter {
			out = append(out, id)
		}
	}
	return out
}

// forget drops what the registry knows about id's liveness (after it failed
// or was terminated); a standby node keeps its standby mark.
func (r *registry) forget(id contracts.NodeID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.lastSeen, id)
	delete(r.ready, id)
}

// lastSeenAt returns when id last showed a sign of life.
func (r *registry) lastSeenAt(id contracts.NodeID) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSeen[id]
}

// idleStandby returns the standby nodes alive now that are not in busy,
// in a stable order.
func (r *registry) idleStandby(busy []contracts.NodeID) []contracts.NodeID {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []contracts.NodeID
	for id := range r.standby {
		t, ok := r.lastSeen[id]
		if !ok || r.gone[id] || now.Sub(t) > r.silentAfter || slices.Contains(busy, id) {
			continue
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// discover asks every running cache node to identify itself (a micro PING
// of contracts.ServiceNode; each instance answers with its node id in the
// metadata) and registers those that answer within window. A manager that
// starts after its nodes thus knows them before it applies a command,
// instead of waiting for their next heartbeats.
func (r *registry) discover(ctx context.Context, nc *nats.Conn, window time.Duration) int {
	ch := make(chan *nats.Msg, 256)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+contracts.ServiceNode, inbox, nil); err != nil {
		return 0
	}
	timer := time.NewTimer(window)
	defer timer.Stop()
	found := 0
	for {
		select {
		case m := <-ch:
			var ping struct {
				Metadata map[string]string `json:"metadata"`
			}
			if json.Unmarshal(m.Data, &ping) == nil {
				if id := contracts.NodeID(ping.Metadata["node"]); id.Valid() == nil {
					r.seen(id)
					found++
				}
			}
		case <-timer.C:
			return found
		case <-ctx.Done():
			return found
		}
	}
}
