package imagestore

import (
	"context"
	"net/url"
	"strings"

	"github.com/cachepool/cachepool/contracts"
	"golang.org/x/sync/singleflight"
)

// list answers every stored key, sorted by bytes.
func (s *service) list(ctx context.Context) (contracts.ListKeysReply, error) {
	keys, err := s.meta.ListKeys(ctx)
	if err != nil {
		return contracts.ListKeysReply{}, unavailable("metadata database", err)
	}
	if keys == nil {
		keys = []string{}
	}
	return contracts.ListKeysReply{Keys: keys}, nil
}

// clearAll deletes every row, every object and every cached entry. It holds
// every key lock of this instance meanwhile, so no write or fill of this
// instance interleaves, and starts a new flight group, so no load that
// starts after it joins a flight that began before.
func (s *service) clearAll(ctx context.Context) (contracts.ClearAllReply, error) {
	unlock := s.locks.lockAll()
	defer unlock()
	var rep contracts.ClearAllReply
	rows, err := s.meta.DeleteAll(ctx)
	if err != nil {
		return rep, unavailable("metadata database", err)
	}
	rep.Rows = rows
	s.flights.Store(new(singleflight.Group))
	objects, err := s.blobs.DeleteAll(ctx)
	rep.Objects = objects
	if err != nil {
		return rep, contracts.Errorf(contracts.CodeUnavailable, "deleted %d rows and %d objects, then the blob store failed: %v", rows, objects, err)
	}
	cleared, err := s.nodes.clearAll(ctx, tableNodes(s.table.Current()))
	rep.CachedItems = cleared.Items
	if err != nil {
		return rep, contracts.Errorf(contracts.CodeUnavailable, "deleted %d rows and %d objects and %d cached items, but some nodes did not clear: %v", rows, objects, cleared.Items, err)
	}
	s.log.Info("cleared all data", "rows", rows, "objects", objects, "cached_items", cleared.Items, "nodes", cleared.Nodes)
	return rep, nil
}

// clearCache clears every node of the table; Nodes counts those that
// answered. Any node that did not makes it a 503 naming the node.
func (s *service) clearCache(ctx context.Context) (contracts.ClearReply, error) {
	rep, err := s.nodes.clearAll(ctx, tableNodes(s.table.Current()))
	if err != nil {
		return rep, contracts.Errorf(contracts.CodeUnavailable, "cleared %d items on %d nodes, but: %v", rep.Items, rep.Nodes, err)
	}
	return rep, nil
}

// redactBlob hides static credentials of an s3:// URL for logs.
func redactBlob(spec string) string {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "s3" {
		return spec
	}
	q := u.Query()
	for _, k := range []string{"secret_access_key", "session_token"} {
		if q.Has(k) {
			q.Set(k, "REDACTED")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// dbKind names the database without its credentials, for logs.
func dbKind(spec string) string {
	if strings.HasPrefix(spec, "postgres") {
		if u, err := url.Parse(spec); err == nil {
			return "postgres://" + u.Host + u.Path
		}
		return "postgres"
	}
	return spec
}
