package imagestore

import (
	"context"
	"mime"
	"net/http"
	"slices"
	"unicode"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/micro"
)

// maxContentTypeBytes bounds the content type header.
const maxContentTypeBytes = 255

func (s *service) handlePut(ctx context.Context, r micro.Request) {
	rep, err := s.put(ctx, r.Headers().Get(contracts.HdrKey), r.Headers().Get(contracts.HdrContentType), r.Data())
	if err != nil {
		bus.RespondError(r, err)
		return
	}
	if err := r.RespondJSON(rep); err != nil {
		s.log.Warn("answering a put", "key", rep.Key, "err", err)
	}
}

// put is the write path. Under the key's lock (writes of one key inside
// this instance run one at a time):
//  1. the bytes go to a fresh object (the key never names it);
//  2. the row points the key at it with version+1, atomically in the database;
//  3. loads that start from now on begin a new flight (they read the new row);
//  4. the owner node gets the new version (a node keeps the newer version, so
//     an older copy arriving later never wins); a previous owner, while the
//     key's partition moves, drops its older copy; if the owner cannot take
//     it, its older copy is invalidated instead (best effort: the image is
//     durable, so the put still succeeds);
//  5. the replaced object is deleted;
//  6. the answer goes out.
//
// If step 1 or 2 fails nothing changed for readers (a blob written in vain is
// deleted) and the error is a 503.
func (s *service) put(ctx context.Context, key, contentType string, data []byte) (contracts.StorePutReply, error) {
	var rep contracts.StorePutReply
	if err := contracts.ValidateKey(key); err != nil {
		return rep, contracts.Errorf(contracts.CodeBadRequest, "key: %v", err)
	}
	if int64(len(data)) > s.cfg.MaxImageBytes {
		return rep, contracts.Errorf(contracts.CodeTooLarge, "file: the image is %d bytes, the limit is %d", len(data), s.cfg.MaxImageBytes)
	}
	if len(data) == 0 {
		return rep, contracts.Errorf(contracts.CodeBadRequest, "file: the image is empty")
	}
	ct, err := normalizeContentType(contentType, data)
	if err != nil {
		return rep, err
	}

	unlock := s.locks.lock(key)
	defer unlock()
	object, err := s.blobs.Put(ctx, data)
	if err != nil {
		return rep, unavailable("blob store", err)
	}
	up, err := s.meta.Upsert(ctx, key, object, ct, int64(len(data)))
	if err != nil {
		s.deleteObject(object, "unreferenced after a failed upsert")
		return rep, unavailable("metadata database", err)
	}
	s.flights.Load().Forget(key)
	version := uint64(up.Version)
	s.fillAfterWrite(ctx, key, version, ct, data)
	if up.OldObject != "" {
		s.deleteObject(up.OldObject, "replaced")
	}
	return contracts.StorePutReply{Key: key, Version: version, Bytes: int64(len(data))}, nil
}

// fillAfterWrite puts version into the key's owner node. If the table
// changes meanwhile, the new owner gets it too.
func (s *service) fillAfterWrite(ctx context.Context, key string, version uint64, ct string, data []byte) {
	var done []contracts.NodeID
	for range 2 {
		t := s.table.Current()
		owner, previous, err := t.Owner(key)
		if err != nil {
			return // no node to cache on: the next load fills it
		}
		if previous != "" && previous != owner {
			if err := s.nodes.invalidate(ctx, previous, key, version); err != nil {
				s.log.Warn("invalidating the previous owner's copy", "key", key, "node", previous, "version", version, "err", err)
			}
		}
		if !slices.Contains(done, owner) {
			s.putOnNode(ctx, owner, key, version, ct, data)
			done = append(done, owner)
		}
		if s.table.Current() == t {
			return
		}
	}
}

// putOnNode stores version on node; when the node did not take it and may
// hold an older copy, that copy is invalidated.
func (s *service) putOnNode(ctx context.Context, node contracts.NodeID, key string, version uint64, ct string, data []byte) {
	rep, err := s.nodes.put(ctx, node, key, version, ct, data)
	if err == nil && (rep.Stored || rep.Version >= version) {
		return
	}
	if err != nil {
		s.log.Warn("node put failed; invalidating its copy", "key", key, "node", node, "version", version, "err", err)
	} else {
		s.log.Info("node refused the image; invalidating its copy", "key", key, "node", node, "version", version, "reason", rep.Reason)
	}
	// The invalidation gets its own time even if the put used up the request's.
	if err := s.nodes.invalidate(context.WithoutCancel(ctx), node, key, version); err != nil {
		s.log.Error("invalidation failed: the node may serve an older version until it evicts it", "key", key, "node", node, "version", version, "err", err)
	}
}

// deleteObject removes an object nobody references, best effort.
func (s *service) deleteObject(object, why string) {
	ctx, cancel := context.WithTimeout(s.base, s.cfg.Timeout)
	defer cancel()
	if err := s.blobs.Delete(ctx, object); err != nil {
		s.log.Warn("deleting an object failed; it stays as garbage", "object", object, "why", why, "err", err)
	}
}

// normalizeContentType checks the client's content type, or sniffs one.
func normalizeContentType(ct string, data []byte) (string, error) {
	if ct == "" {
		return http.DetectContentType(data), nil
	}
	if len(ct) > maxContentTypeBytes {
		return "", contracts.Errorf(contracts.CodeBadRequest, "content_type: longer than %d bytes", maxContentTypeBytes)
	}
	for _, r := range ct {
		if r > unicode.MaxASCII || unicode.IsControl(r) {
			return "", contracts.Errorf(contracts.CodeBadRequest, "content_type: must be printable ASCII")
		}
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return "", contracts.Errorf(contracts.CodeBadRequest, "content_type: %v", err)
	}
	return ct, nil
}

// unavailable wraps a dependency failure as a 503 naming the dependency.
func unavailable(what string, err error) error {
	return contracts.Errorf(contracts.CodeUnavailable, "%s unavailable: %v", what, err)
}
