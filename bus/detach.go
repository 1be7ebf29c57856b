package bus

import (
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Detach returns a copy of r that answers through nc directly. Use it when
// a handler answers after Handle has returned (work handed to another
// goroutine): micro's own request records the answer's error in state that
// its dispatcher reads when Handle returns, so answering it later is a data
// race. Errors answered through the copy are not counted in micro's
// per-endpoint error statistics.
func Detach(nc *nats.Conn, r micro.Request) micro.Request {
	return &detached{nc: nc, data: r.Data(), hdr: r.Headers(), subject: r.Subject(), reply: r.Reply()}
}

type detached struct {
	nc             *nats.Conn
	data           []byte
	hdr            micro.Headers
	subject, reply string
}

func (d *detached) send(m *nats.Msg) error {
	if d.reply == "" {
		return errors.New("bus: request has no reply subject")
	}
	m.Subject = d.reply
	return d.nc.PublishMsg(m)
}

func (d *detached) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, o := range opts {
		o(m)
	}
	return d.send(m)
}

func (d *detached) RespondJSON(v any, opts ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return d.Respond(b, opts...)
}

func (d *detached) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" || description == "" {
		return micro.ErrArgRequired
	}
	m := &nats.Msg{Header: nats.Header{micro.ErrorHeader: {description}, micro.ErrorCodeHeader: {code}}}
	for _, o := range opts {
		o(m)
	}
	m.Data = data
	return d.send(m)
}

func (d *detached) Data() []byte           { return d.data }
func (d *detached) Headers() micro.Headers { return d.hdr }
func (d *detached) Subject() string        { return d.subject }
func (d *detached) Reply() string          { return d.reply }
