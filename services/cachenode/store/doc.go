// Package store is one cache node's in-memory store: versioned entries under
// a byte capacity with a replacement policy.
//
// Guarantees:
//   - The stored bytes (len(key)+len(value) summed over entries) never exceed
//     the capacity, observed at any moment between two calls.
//   - An entry larger than the capacity is refused and evicts nothing.
//   - A put stores only when the key is absent or the new version is at least
//     the held one, so a late copy can never overwrite a newer image.
//   - A policy change keeps every entry; a smaller capacity evicts at once.
//
// A Store is safe for concurrent use. Values are not copied: Put takes
// ownership of the value slice and Get returns the stored slice, which the
// caller must not modify.
package store
