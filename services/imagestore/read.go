package imagestore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
	"github.com/nats-io/nats.go/micro"
)

// image is a loaded image version.
type image struct {
	data        []byte
	version     uint64
	contentType string
}

func (s *service) handleLoad(ctx context.Context, r micro.Request) {
	img, err := s.load(ctx, string(r.Data()))
	if err != nil {
		bus.RespondError(r, err)
		return
	}
	h := micro.Headers{
		contracts.HdrVersion:     {strconv.FormatUint(img.version, 10)},
		contracts.HdrContentType: {img.contentType},
	}
	if err := r.Respond(img.data, micro.WithHeaders(h)); err != nil {
		s.log.Warn("answering a load", "err", err)
	}
}

// load is the read path for a cache miss. Concurrent loads of one key share
// one flight (one row read, one blob read, one node fill); a load that
// starts after a put of the key has written its row never joins a flight
// that began before (the put forgets the flight). The flight runs under its
// own timeout, so a caller giving up does not fail the others.
func (s *service) load(ctx context.Context, key string) (image, error) {
	if err := contracts.ValidateKey(key); err != nil {
		return image{}, contracts.Errorf(contracts.CodeBadRequest, "key: %v", err)
	}
	ch := s.flights.Load().DoChan(key, func() (_ any, err error) {
		// singleflight re-panics a flight's panic where nobody can recover
		// it; turn it into an error for every waiter instead.
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("load flight panicked", "key", key, "panic", p)
				err = contracts.Errorf(contracts.CodeInternal, "internal error loading %q", key)
			}
		}()
		fctx, cancel := context.WithTimeout(s.base, flightTimeout(s.cfg.Timeout))
		defer cancel()
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		case <-fctx.Done():
			return image{}, contracts.Errorf(contracts.CodeUnavailable, "key-image store is overloaded")
		}
		return s.loadFlight(fctx, key)
	})
	// DoChan has joined or started the flight by now.
	s.loadsWaiting.Add(1)
	defer s.loadsWaiting.Add(-1)
	select {
	case res := <-ch:
		if res.Err != nil {
			return image{}, res.Err
		}
		return res.Val.(image), nil
	case <-ctx.Done():
		return image{}, contracts.Errorf(contracts.CodeUnavailable, "loading %q took longer than %v", key, s.cfg.Timeout)
	}
}

// flightTimeout bounds a load flight: it ends a little before the first of
// its waiters (who wait timeout), so that they get its error, which names
// the dependency that did not answer, rather than a bare timeout.
func flightTimeout(timeout time.Duration) time.Duration {
	return timeout - timeout/8
}

// loadFlight reads the row, then the bytes: from the previous owner while
// the key's partition moves (accepted only at the row's version), else
// from the blob store. A blob that vanished because a put replaced it
// meanwhile sends it back to the row once. It then fills the owner node.
func (s *service) loadFlight(ctx context.Context, key string) (image, error) {
	for attempt := 0; ; attempt++ {
		row, err := s.meta.Get(ctx, key)
		if errors.Is(err, meta.ErrNotFound) {
			return image{}, contracts.Errorf(contracts.CodeNotFound, "no image under key %q", key)
		}
		if err != nil {
			return image{}, unavailable("metadata database", err)
		}
		img := image{version: uint64(row.Version), contentType: row.ContentType}
		owner, previous, _ := s.table.Current().Owner(key)
		if previous != "" && previous != owner {
			data, v, ok, err := s.nodes.get(ctx, previous, key)
			switch {
			case err != nil:
				s.log.Debug("previous owner did not answer", "key", key, "node", previous, "err", err)
			case ok && v == img.version:
				img.data = data
			}
		}
		if img.data == nil {
			data, err := s.blobs.Get(ctx, row.Object)
			if errors.Is(err, blob.ErrNotFound) && attempt == 0 {
				continue // replaced (or cleared) since the row was read
			}
			if errors.Is(err, blob.ErrNotFound) {
				return image{}, contracts.Errorf(contracts.CodeUnavailable, "blob store has no object for key %q (version %d)", key, row.Version)
			}
			if err != nil {
				return image{}, unavailable("blob store", err)
			}
			img.data = data
		}
		if owner != "" {
			s.fillAfterLoad(ctx, owner, key, img)
		}
		return img, nil
	}
}

// fillAfterLoad puts img into the owner node, but only while img is still
// the key's current version: the check and the put happen under the key's
// lock, which a put of the key holds from its blob write to its node put,
// so a load that raced an upload never puts the older image back.
func (s *service) fillAfterLoad(ctx context.Context, owner contracts.NodeID, key string, img image) {
	unlock := s.locks.lock(key)
	defer unlock()
	cur, err := s.meta.CurrentVersion(ctx, key)
	if err != nil || uint64(cur) != img.version {
		return
	}
	if _, err := s.nodes.put(ctx, owner, key, img.version, img.contentType, img.data); err != nil {
		s.log.Warn("filling the owner node failed", "key", key, "node", owner, "err", err)
	}
}
