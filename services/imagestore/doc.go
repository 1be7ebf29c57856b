// Package imagestore is cachepool's key-image store: it keeps every image
// durably (bytes in a blob store, the key → object mapping and a version in
// a SQL database) and runs the write path and the read-through fill of the
// cache pool.
//
// Run serves the micro service contracts.ServiceStore in the queue group
// contracts.QueueStore, so any number of instances can run side by side:
//
//   - put (contracts.StorePut): blob, then row (version + 1), then the owner
//     node, then the answer. After a put answers, no load returns an older
//     image, and the owner node never ends with an older version.
//   - load (contracts.StoreLoad): the edge's cache miss. Concurrent loads of
//     one key read the store once (singleflight) and fill the owner node only
//     while their version is still current.
//   - list, clear_all, clear_cache: see README.md.
//
// Subpackages blob and meta hold the storage adapters.
package imagestore
