package contracts

// DefaultMaxImageBytes is the default image size limit (8 MiB).
const DefaultMaxImageBytes = 8 << 20

// StorePutReply answers a store put once the blob, the row and the owner
// node hold the new image.
type StorePutReply struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	Bytes   int64  `json:"bytes"`
}

// ListKeysReply lists every stored key, sorted.
type ListKeysReply struct {
	Keys []string `json:"keys"`
}

// ClearAllReply reports what a clear-all deleted.
type ClearAllReply struct {
	Rows        int64 `json:"rows"`
	Objects     int64 `json:"objects"`
	CachedItems int64 `json:"cached_items"`
}
