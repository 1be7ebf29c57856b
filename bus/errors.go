package bus

import (
	"context"
	"errors"
	"strconv"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// CodeOf maps an application error to a wire code: a *contracts.Error
// keeps its code, a context deadline is 504, anything else 500.
func CodeOf(err error) int {
	var ce *contracts.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return contracts.CodeTimeout
	case errors.Is(err, nats.ErrNoResponders):
		return contracts.CodeUnavailable
	}
	return contracts.CodeInternal
}

// AsWire turns any error into a *contracts.Error with a user-safe message.
func AsWire(err error) *contracts.Error {
	var ce *contracts.Error
	if errors.As(err, &ce) {
		return ce
	}
	return &contracts.Error{Code: CodeOf(err), Message: err.Error()}
}

// RespondError answers a micro request with err mapped to its wire code.
func RespondError(req micro.Request, err error) {
	we := AsWire(err)
	_ = req.Error(strconv.Itoa(we.Code), we.Message, nil)
}

// ReplyError returns the *contracts.Error carried by a micro error reply,
// or nil when msg is a success.
func ReplyError(msg *nats.Msg) *contracts.Error {
	if msg == nil || msg.Header == nil {
		return nil
	}
	code := msg.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return nil
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		n = contracts.CodeInternal
	}
	return &contracts.Error{Code: n, Message: msg.Header.Get(micro.ErrorHeader)}
}

// requestError maps a failed nats request to a wire error naming the subject.
func requestError(subject string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &contracts.Error{Code: contracts.CodeUnavailable, Message: "no service answers on " + subject}
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return &contracts.Error{Code: contracts.CodeTimeout, Message: "no answer in time on " + subject}
	}
	return &contracts.Error{Code: contracts.CodeUnavailable, Message: subject + ": " + err.Error()}
}
