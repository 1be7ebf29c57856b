package bus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// RequestMsg sends msg and returns the reply. A micro error reply becomes a
// *contracts.Error, as do no responders (503) and timeouts (504).
func RequestMsg(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (*nats.Msg, error) {
	reply, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, requestError(msg.Subject, err)
	}
	if we := ReplyError(reply); we != nil {
		return reply, we
	}
	return reply, nil
}

// Request sends req as JSON (nil sends an empty body) and decodes the JSON
// reply into Resp.
func Request[Resp any](ctx context.Context, nc *nats.Conn, subject string, req any) (Resp, error) {
	var out Resp
	var body []byte
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return out, fmt.Errorf("bus: encode request for %s: %w", subject, err)
		}
		body = b
	}
	reply, err := RequestMsg(ctx, nc, &nats.Msg{Subject: subject, Data: body})
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		return out, &contracts.Error{Code: contracts.CodeInternal, Message: fmt.Sprintf("bad reply on %s: %v", subject, err)}
	}
	return out, nil
}
