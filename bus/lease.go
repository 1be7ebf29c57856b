package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the KV bucket of leader leases: one key per role
// ("manager", "scaler"), whose value is the holder's LeaseHolder JSON. Each
// value carries a per-message TTL, so the server removes a lease its holder
// stopped renewing and leaves a delete marker that the waiting instances see.
const LeaseBucket = "cachepool_leases"

// DefaultLeaseTTL is the lease TTL when LeaseConfig.TTL is zero: a holder
// that dies is replaced within about this long.
const DefaultLeaseTTL = 3 * time.Second

// ErrLeaseLost is the cause of the context given to RunLeased's run when the
// lease could not be renewed in time or was taken over.
var ErrLeaseLost = errors.New("bus: lease lost")

// LeaseConfig configures RunLeased.
type LeaseConfig struct {
	// Role is the lease key, a valid KV key ("manager", "scaler").
	Role string
	// TTL is how long a lease lives without renewal (default
	// DefaultLeaseTTL). The server counts whole seconds, so it is rounded up
	// to a whole second, at least one.
	TTL time.Duration
	// Replicas of LeaseBucket (default 1) when this contender creates it;
	// an existing bucket is used as it is.
	Replicas int
	// Instance names this contender in LeaseHolder (default a random id).
	Instance string
}

// LeaseHolder is the value of a held lease.
type LeaseHolder struct {
	Role       string    `json:"role"`
	Instance   string    `json:"instance"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	AcquiredAt time.Time `json:"acquired_at"`
	RenewedAt  time.Time `json:"renewed_at"`
	TTLMS      int64     `json:"ttl_ms"`
}

// LeaseBucketConfig is the configuration of LeaseBucket. Markers left when a
// lease expires are kept one minute.
func LeaseBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         LeaseBucket,
		Description:    "cachepool leader leases: one key per role, expiring unless renewed",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(replicas, 1),
		LimitMarkerTTL: time.Minute,
	}
}

// ReadLease returns the current holder of role's lease, or an error wrapping
// jetstream.ErrKeyNotFound when nobody holds it.
func ReadLease(ctx context.Context, js jetstream.JetStream, role string) (LeaseHolder, error) {
	var h LeaseHolder
	kv, err := js.KeyValue(ctx, LeaseBucket)
	if err != nil {
		return h, fmt.Errorf("bus: lease bucket: %w", err)
	}
	e, err := kv.Get(ctx, role)
	if errors.Is(err, jetstream.ErrKeyDeleted) {
		err = jetstream.ErrKeyNotFound
	}
	if err != nil {
		return h, fmt.Errorf("bus: lease %s: %w", role, err)
	}
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return h, fmt.Errorf("bus: lease %s: %w", role, err)
	}
	return h, nil
}

// RunLeased runs run only while this instance holds the lease of cfg.Role,
// so among instances sharing a role at most one runs at a time.
//
// It loops until ctx ends: wait for the lease (watching the key for a
// release or an expiry, with a periodic retry as a safety net), run run
// with a context that is cancelled with cause ErrLeaseLost as soon as the
// lease cannot be renewed in time, and release the lease (delete the key,
// so a standby takes over at once) when run returns while still holding it.
// The lease is renewed every TTL/3; it counts as lost when a renewal finds
// someone else's revision, or when no renewal succeeded within 5/6 of the
// TTL since the last successful one was sent, which is before the server can
// expire it, so a standby never starts before the old holder's context is
// cancelled. What run does after the cancel is up to run: it must stop
// writing promptly, and shared writes should be compare-and-set.
//
// RunLeased returns nil once ctx ends (after run returned), and run's error
// if run fails while holding the lease. After run returns nil or the lease is
// lost, it goes back to waiting.
func RunLeased(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig, log *slog.Logger, run func(ctx context.Context) error) error {
	l, err := newLease(cfg, log)
	if err != nil {
		return err
	}
	// Bind first: the manager and the scaler share the bucket, and one
	// started with other replicas must not rewrite it under the other.
	kv, err := js.KeyValue(ctx, LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = EnsureKV(ctx, js, LeaseBucketConfig(cfg.Replicas))
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	l.kv, l.js = kv, js
	for {
		rev, sent, err := l.acquire(ctx)
		if err != nil {
			return nil // only ctx ends the wait
		}
		lost, runErr := l.hold(ctx, rev, sent, run)
		switch {
		case ctx.Err() != nil:
			return runErr
		case lost:
			if runErr != nil {
				l.log.Warn("lease lost; run ended with an error", "err", runErr)
			}
		case runErr != nil:
			return runErr
		default:
			// run ended on its own: let another instance have a turn.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(l.ttl / 3):
			}
		}
	}
}

// lease is one contender for a role.
type lease struct {
	role   string
	ttl    time.Duration // whole seconds, the server's TTL
	holder LeaseHolder
	log    *slog.Logger
	kv     jetstream.KeyValue
	js     jetstream.JetStream
}

func newLease(cfg LeaseConfig, log *slog.Logger) (*lease, error) {
	if !validKey(cfg.Role) {
		return nil, fmt.Errorf("bus: lease: role %q is not a valid key", cfg.Role)
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("bus: lease: ttl must be positive, got %v", cfg.TTL)
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if whole := ttl.Truncate(time.Second); whole < ttl {
		ttl = whole + time.Second
	}
	ttl = max(ttl, time.Second)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inst := cfg.Instance
	if inst == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		inst = hex.EncodeToString(b[:])
	}
	host, _ := os.Hostname()
	return &lease{
		role:   cfg.Role,
		ttl:    ttl,
		holder: LeaseHolder{Role: cfg.Role, Instance: inst, Host: host, PID: os.Getpid(), TTLMS: ttl.Milliseconds()},
		log:    log.With("lease", cfg.Role, "instance", inst),
	}, nil
}

// acquire waits until the lease is ours; it returns the lease's revision and
// when the creating request was sent, or ctx's error.
func (l *lease) acquire(ctx context.Context) (uint64, time.Time, error) {
	var updates <-chan jetstream.KeyValueEntry
	if w, err := l.kv.Watch(ctx, l.role); err == nil {
		defer func() { _ = w.Stop() }()
		updates = w.Updates()
	} else if ctx.Err() == nil {
		l.log.Warn("cannot watch the lease; polling instead", "err", err)
	}
	started := time.Now()
	standing := false
	for {
		sent := time.Now()
		l.holder.AcquiredAt, l.holder.RenewedAt = sent.UTC(), sent.UTC()
		rev, err := l.kv.Create(ctx, l.role, l.value(), jetstream.KeyTTL(l.ttl))
		if err == nil {
			l.log.Info("lease acquired", "waited", time.Since(started).Round(time.Millisecond))
			return rev, sent, nil
		}
		if ctx.Err() != nil {
			return 0, time.Time{}, ctx.Err()
		}
		if !IsConflict(err) {
			l.log.Warn("cannot take the lease; retrying", "err", err)
		} else if !standing {
			standing = true
			if h, err := ReadLease(ctx, l.js, l.role); err == nil {
				l.log.Info("standing by: the lease is held", "holder", h.Instance, "host", h.Host, "pid", h.PID)
			}
		}
		// Wait for a release or an expiry marker; retry every TTL anyway.
		timer := time.NewTimer(l.ttl)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return 0, time.Time{}, ctx.Err()
			case <-timer.C:
				break wait
			case e, ok := <-updates:
				if !ok {
					updates = nil
					continue
				}
				if e != nil && e.Operation() != jetstream.KeyValuePut {
					l.log.Debug("the lease was released or expired", "op", e.Operation().String())
					timer.Stop()
					break wait
				}
			}
		}
	}
}

// hold runs run while renewing the lease. It reports whether the lease was
// lost (otherwise it has been released) and run's error.
func (l *lease) hold(ctx context.Context, rev uint64, sent time.Time, run func(context.Context) error) (lost bool, err error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	kept := make(chan uint64, 1)
	go func() { kept <- l.keep(rctx, rev, sent, cancel) }()
	err = run(rctx)
	cancel(context.Canceled)
	last := <-kept
	if last == 0 {
		return true, err
	}
	l.release(last)
	return false, err
}

// keep renews the lease every TTL/3 until ctx ends, returning the revision
// held then, or cancels with ErrLeaseLost and returns 0 when it is lost.
func (l *lease) keep(ctx context.Context, rev uint64, lastSent time.Time, cancel context.CancelCauseFunc) uint64 {
	every := l.ttl / 3
	// Lost once no renewal succeeded for 5/6 of the TTL: the server cannot
	// have expired the lease before then, since it counts from its own
	// receipt of the last renewal, which came after lastSent.
	grace := l.ttl - l.ttl/6
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-timer.C:
		}
		deadline := lastSent.Add(grace)
		if !time.Now().Before(deadline) {
			l.log.Warn("lease lost: no renewal succeeded in time")
			cancel(ErrLeaseLost)
			return 0
		}
		sent := time.Now()
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		next, err := l.renew(rctx, rev, sent)
		rcancel()
		switch {
		case err == nil:
			rev, lastSent = next, sent
			timer.Reset(every)
		case ctx.Err() != nil:
			return rev
		case IsConflict(err):
			l.log.Warn("lease lost: it expired or was taken over", "err", err)
			cancel(ErrLeaseLost)
			return 0
		default:
			l.log.Warn("lease renewal failed; retrying", "err", err)
			timer.Reset(min(every/4, max(time.Until(deadline), 0)))
		}
	}
}

// renew rewrites the lease at revision rev with a fresh TTL. The KV API has
// no TTL on Update, so it publishes to the key's subject with the same
// expected-last-sequence check Update uses.
func (l *lease) renew(ctx context.Context, rev uint64, at time.Time) (uint64, error) {
	l.holder.RenewedAt = at.UTC()
	msg := &nats.Msg{Subject: "$KV." + LeaseBucket + "." + l.role, Data: l.value()}
	ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// release deletes the lease if it is still ours, so a standby takes over at
// once. A renewal cut short by the stop may have landed after all, so a
// conflict is checked against the stored holder once.
func (l *lease) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	err := l.kv.Delete(ctx, l.role, jetstream.LastRevision(rev))
	if IsConflict(err) {
		var e jetstream.KeyValueEntry
		if e, err = l.kv.Get(ctx, l.role); err == nil {
			var h LeaseHolder
			if json.Unmarshal(e.Value(), &h) == nil && h.Instance == l.holder.Instance {
				err = l.kv.Delete(ctx, l.role, jetstream.LastRevision(e.Revision()))
			}
		}
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		l.log.Warn("lease not released; it expires on its own", "err", err)
		return
	}
	l.log.Info("lease released")
}

// validKey reports a valid KV key, as jetstream checks it.
func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-/_=.", r)) {
			return false
		}
	}
	return true
}

func (l *lease) value() []byte {
	b, _ := json.Marshal(l.holder)
	return b
}
