package contracts

import "fmt"

// Wire error codes. They are HTTP-like on purpose: the edge turns a code
// into the same HTTP status, in one place.
const (
	CodeBadRequest   = 400 // the request is malformed or a field is invalid
	CodeUnauthorized = 401 // a mutating call without the admin token
	CodeNotFound     = 404 // unknown key, node or request
	CodeConflict     = 409 // rejected by a rule (a bound, a stale version)
	CodeTooLarge     = 413 // an image over the configured limit
	CodeInternal     = 500 // a bug or an unexpected failure
	CodeUnavailable  = 503 // a dependency (store, database, node) cannot answer now
	CodeTimeout      = 504 // a dependency did not answer in time
)

// Error is an application error with a wire code. Services return it (or
// wrap it) from handlers; bus maps it to the micro error headers and back.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Message) }

// Errorf builds an *Error with a formatted, user-safe message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
