package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/micro"
)

// Validator is implemented by request types that check themselves.
type Validator interface{ Validate() error }

// DefaultTimeout bounds one handler call when an endpoint sets none.
const DefaultTimeout = 30 * time.Second

// JSON adapts fn into a micro handler: it decodes the body into Req
// (strictly: unknown fields and trailing data are 400), calls Validate when
// Req has it (400 with the message), runs fn under a context bounded by
// timeout and derived from base, and responds with the JSON of Resp or the
// error's wire code. An empty body decodes as Req's zero value.
func JSON[Req, Resp any](base context.Context, timeout time.Duration, fn func(context.Context, Req) (Resp, error)) micro.Handler {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return micro.HandlerFunc(func(r micro.Request) {
		var req Req
		if data := bytes.TrimSpace(r.Data()); len(data) > 0 {
			if err := DecodeStrict(data, &req); err != nil {
				RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "%v", err))
				return
			}
		}
		if v, ok := any(req).(Validator); ok {
			if err := v.Validate(); err != nil {
				RespondError(r, contracts.Errorf(contracts.CodeBadRequest, "%v", err))
				return
			}
		}
		ctx, cancel := context.WithTimeout(base, timeout)
		defer cancel()
		resp, err := fn(ctx, req)
		if err != nil {
			RespondError(r, err)
			return
		}
		if err := r.RespondJSON(resp); err != nil {
			RespondError(r, err)
		}
	})
}

// DecodeStrict decodes one JSON value into v, rejecting unknown fields and
// trailing data, with a message that names the problem.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if dec.More() {
		return fmt.Errorf("invalid JSON: trailing data after the object")
	}
	return nil
}

func describeJSONError(err error) error {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Errorf("invalid JSON at byte %d: %v", e.Offset, e)
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			return fmt.Errorf("field %s must be a %s, got a JSON %s", e.Field, e.Type, e.Value)
		}
		return fmt.Errorf("body must be a JSON %s, got a JSON %s", e.Type, e.Value)
	}
	return fmt.Errorf("invalid JSON: %v", err)
}
