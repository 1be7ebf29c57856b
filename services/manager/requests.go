package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// RequestTTL is how long a resize request's record is kept.
const RequestTTL = 24 * time.Hour

// maxListed bounds PoolRequests' answer.
const maxListed = 100

// validRequestID reports whether id can be a request id: 1-128 characters
// of [A-Za-z0-9_-] (it becomes a KV key and a Nats-Msg-Id).
func validRequestID(id string) error {
	if id == "" || len(id) > 128 {
		return errors.New("request_id must be 1-128 characters of [A-Za-z0-9_-]")
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return fmt.Errorf("request_id must be 1-128 characters of [A-Za-z0-9_-], got %q", id)
		}
	}
	return nil
}

// rank orders request states: a record never moves to a lower rank.
func rank(status string) int {
	switch status {
	case contracts.StateQueued:
		return 0
	case contracts.StateRunning:
		return 1
	}
	return 2
}

// requests stores resize request records (one key per request id in
// BucketRequests) and wakes waiters when one changes. Safe for concurrent use.
type requests struct {
	kv      jetstream.KeyValue
	publish func(subject string, v any)

	mu      sync.Mutex
	waiters map[string][]chan struct{}
}

// transition is one state change of a request.
type transition struct {
	Status   string
	Reason   string
	Detail   string // history detail (defaults to Reason)
	Sequence uint64
	From, To int
	Command  *contracts.ResizeCommand
}

// set moves request id to t.Status (creating the record when missing),
// appends to its history, stores it with a compare-and-set, events it on
// contracts.EvtRequest and wakes waiters. A record never goes back to an
// earlier state and a terminal record never changes; such a call returns the
// stored record unchanged. changed reports whether anything was written.
func (r *requests) set(ctx context.Context, id string, t transition) (rec contracts.ResizeRequestState, changed bool, err error) {
	for attempt := 0; ; attempt++ {
		var rev uint64
		e, err := r.kv.Get(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rec = contracts.ResizeRequestState{RequestID: id}
			if t.Command != nil {
				rec.Command = *t.Command
			}
			rec.Command.RequestID = id
			if t.Status != contracts.StateQueued {
				at := rec.Command.RequestedAt
				if at.IsZero() {
					at = time.Now().UTC()
				}
				rec.Status = contracts.StateQueued
				rec.History = []contracts.StateChange{{State: contracts.StateQueued, At: at.UTC()}}
			}
		case err != nil:
			return rec, false, fmt.Errorf("manager: read request %s: %w", id, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return rec, false, fmt.Errorf("manager: stored request %s is not valid JSON: %w", id, err)
			}
			if contracts.Terminal(rec.Status) || rank(t.Status) < rank(rec.Status) || (t.Status == rec.Status && (t.Detail == "" || lastDetail(rec) == t.Detail)) {
				return rec, false, nil
			}
		}
		now := time.Now().UTC()
		rec.Status = t.Status
		if t.Reason != "" || contracts.Terminal(t.Status) {
			rec.Reason = t.Reason
		}
		if t.Sequence != 0 {
			rec.Sequence = t.Sequence
		}
		if t.From != 0 || t.To != 0 {
			rec.FromSize, rec.ToSize = t.From, t.To
		}
		if t.Command != nil && rec.Command.Source == "" {
			rec.Command = *t.Command
			rec.Command.RequestID = id
		}
		detail := t.Detail
		if detail == "" {
			detail = t.Reason
		}
		rec.History = append(rec.History, contracts.StateChange{State: t.Status, At: now, Detail: detail})
		rec.EventID = nuid.Next()
		rec.OccurredAt = now
		b, err := json.Marshal(rec)
		if err != nil {
			return rec, false, err
		}
		if rev == 0 {
			_, err = r.kv.Create(ctx, id, b)
		} else {
			_, err = r.kv.Update(ctx, id, b, rev)
		}
		if err == nil {
			r.publish(contracts.EvtRequest, rec)
			r.wake(id)
			return rec, true, nil
		}
		if !isConflict(err) || attempt >= 50 {
			return rec, false, fmt.Errorf("manager: write request %s: %w", id, err)
		}
	}
}

// get returns the stored record of id, or a 404 error.
func (r *requests) get(ctx context.Context, id string) (contracts.ResizeRequestState, error) {
	var rec contracts.ResizeRequestState
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, contracts.Errorf(contracts.CodeNotFound, "no resize request with request_id %q", id)
	}
	if err != nil {
		return rec, fmt.Errorf("manager: read request %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("manager: stored request %s is not valid JSON: %w", id, err)
	}
	return rec, nil
}

// wait returns id's record once it is terminal, or the latest record when
// wait passes or ctx ends first. A record that does not exist yet (a command
// queued straight into the stream is recorded when it runs) is waited for
// too; 404 comes only at the end of the wait.
func (r *requests) wait(ctx context.Context, id string, wait time.Duration) (contracts.ResizeRequestState, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ch := r.subscribe(id)
		rec, err := r.get(ctx, id)
		if (err != nil && bus.CodeOf(err) != contracts.CodeNotFound) || contracts.Terminal(rec.Status) {
			r.unsubscribe(id, ch)
			return rec, err
		}
		select {
		case <-ch:
		case <-timer.C:
			r.unsubscribe(id, ch)
			return r.get(context.WithoutCancel(ctx), id)
		case <-ctx.Done():
			r.unsubscribe(id, ch)
			return rec, err
		}
	}
}

func (r *requests) subscribe(id string) chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.waiters[id] = append(r.waiters[id], ch)
	r.mu.Unlock()
	return ch
}

func (r *requests) unsubscribe(id string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := slices.DeleteFunc(r.waiters[id], func(c chan struct{}) bool { return c == ch })
	if len(list) == 0 {
		delete(r.waiters, id)
	} else {
		r.waiters[id] = list
	}
}

func (r *requests) wake(id string) {
	r.mu.Lock()
	list := r.waiters[id]
	delete(r.waiters, id)
	r.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}

// recent returns up to maxListed records, most recently queued first.
func (r *requests) recent(ctx context.Context) ([]contracts.ResizeRequestState, error) {
	w, err := r.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return []contracts.ResizeRequestState{}, nil
		}
		return nil, fmt.Errorf("manager: list requests: %w", err)
	}
	defer w.Stop()
	out := []contracts.ResizeRequestState{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				slices.SortStableFunc(out, func(a, b contracts.ResizeRequestState) int {
					if c := queuedAt(b).Compare(queuedAt(a)); c != 0 {
						return c
					}
					if a.Sequence != b.Sequence {
						if a.Sequence > b.Sequence {
							return -1
						}
						return 1
					}
					return strings.Compare(b.RequestID, a.RequestID)
				})
				if len(out) > maxListed {
					out = out[:maxListed]
				}
				return out, nil
			}
			var rec contracts.ResizeRequestState
			if json.Unmarshal(e.Value(), &rec) == nil {
				out = append(out, rec)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func queuedAt(r contracts.ResizeRequestState) time.Time {
	if len(r.History) > 0 {
		return r.History[0].At
	}
	return r.OccurredAt
}

func lastDetail(r contracts.ResizeRequestState) string {
	if len(r.History) == 0 {
		return ""
	}
	return r.History[len(r.History)-1].Detail
}
