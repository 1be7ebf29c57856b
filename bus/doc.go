// Package bus holds cachepool's opinionated helpers over nats.go: named
// connections that reconnect forever, the embedded server, idempotent
// stream and KV setup, typed micro endpoints, JSON requests, and the one
// mapping from application errors to wire codes and back.
//
// It is not a broker abstraction: callers use *nats.Conn, jetstream and
// micro directly where that is clearer. The package never logs on its own
// except through the *slog.Logger a caller passes in.
package bus
