// Package contracts is cachepool's public wire interface: subject builders,
// stream, consumer, bucket and service names, message structs with Validate,
// the partition function, the node binary batch codec and the wire error codes.
//
// It depends on the standard library only. Every service imports it; no
// service imports another service.
//
// Subjects follow cachepool.v1.<domain>.<kind>.<name>[.<id>]:
//
//	kind cmd  an imperative with exactly one handler (JetStream-ordered)
//	kind evt  a past-tense fact, any number of subscribers
//	kind req  a query or RPC over micro request-reply
//
// Compatibility: adding optional JSON fields or new subjects stays in v1.
// Removing, renaming or changing the meaning of a field makes v2 subjects.
// Golden files under testdata/ catch accidental wire changes.
package contracts
