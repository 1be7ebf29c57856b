package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// feed hands the consumer's messages to the actor. With MaxAckPending 1 the
// server delivers the next command only after the previous one is acked or
// terminated, so at most one command is ever held here. A message still
// held when ctx ends is kept for Run to nak.
func (m *manager) feed(ctx context.Context, it jetstream.MessagesContext, out chan<- jetstream.Msg) {
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			m.log.Debug("resize consumer", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			m.hold(msg)
			return
		}
	}
}

// actor is the manager's single worker: it applies resize commands in
// stream order and heals the pool (failed nodes, leftovers, the target
// size) between them, so nothing races the table. It returns when ctx ends.
func (m *manager) actor(ctx context.Context, msgs <-chan jetstream.Msg) {
	m.resume(ctx)
	m.heal(ctx)
	tick := time.NewTicker(max(m.cfg.Heartbeat/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-msgs:
			m.handle(ctx, msg)
		case <-m.kickCh:
			m.heal(ctx)
		case <-tick.C:
			if time.Now().After(m.healAfter) {
				m.heal(ctx)
			}
		}
	}
}

// resume asks the server to redeliver at once a command that a previous
// manager stopped working on (it would otherwise wait for its ack wait).
func (m *manager) resume(ctx context.Context) {
	st, _, err := m.st.state(ctx)
	if err != nil {
		return
	}
	if st.Current != nil && st.Current.AckSubject != "" {
		m.log.Info("resuming an interrupted resize", "request_id", st.Current.Command.RequestID, "seq", st.Current.Seq, "from", st.Current.From, "to", st.Current.To)
		_ = m.nc.Publish(st.Current.AckSubject, []byte("-NAK"))
		return
	}
	// A command delivered to a manager that died before storing anything:
	// with max ack pending 1 it is the last one delivered. Its ack subject
	// follows the documented $JS.ACK.<stream>.<consumer>.<delivered>.<stream
	// seq>.<consumer seq>.<time>.<pending> form.
	info, err := m.cons.Info(ctx)
	if err != nil || info.NumAckPending == 0 {
		return
	}
	m.log.Info("asking for the redelivery of a command held by a previous manager", "seq", info.Delivered.Stream)
	subject := fmt.Sprintf("$JS.ACK.%s.%s.1.%d.%d.0.0", contracts.StreamResize, contracts.ConsumerResize, info.Delivered.Stream, info.Delivered.Consumer)
	_ = m.nc.Publish(subject, []byte("-NAK"))
}

// hold keeps a message this manager stops working on; Run naks it once the
// consumer subscription is gone, so the server redelivers it to the next
// Run at once rather than to this one's dead subscription.
func (m *manager) hold(msg jetstream.Msg) {
	m.heldMu.Lock()
	m.held = append(m.held, msg)
	m.heldMu.Unlock()
}

// heal reconciles the pool outside of a command, logging a failure once.
func (m *manager) heal(ctx context.Context) {
	err := m.reconcile(ctx, "")
	if ctx.Err() != nil {
		return
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	// While healing fails (a launcher that cannot start nodes, no standby
	// node), periodic retries back off up to 30s; kicks retry at once.
	if err != nil {
		m.healBackoff = min(max(2*m.healBackoff, m.cfg.Heartbeat), 30*time.Second)
		m.healAfter = time.Now().Add(m.healBackoff)
	} else {
		m.healBackoff, m.healAfter = 0, time.Time{}
	}
	if msg != m.lastHeal {
		if err != nil {
			m.log.Warn("the pool cannot reach its target yet", "err", err)
		} else if m.lastHeal != "" {
			m.log.Info("the pool reached its target")
		}
		m.lastHeal = msg
	}
}

// parseCommand decodes a queued command and its request id (Nats-Msg-Id,
// falling back to the body's request_id). Unknown fields are allowed
// (producers may be newer); a command that fails validation is poison.
func parseCommand(msg jetstream.Msg) (contracts.ResizeCommand, error) {
	var cmd contracts.ResizeCommand
	err := json.Unmarshal(msg.Data(), &cmd)
	hdr := msg.Headers().Get(jetstream.MsgIDHeader)
	switch {
	case hdr != "" && cmd.RequestID != "" && hdr != cmd.RequestID:
		return cmd, fmt.Errorf("request_id %q differs from Nats-Msg-Id %q", cmd.RequestID, hdr)
	case hdr != "":
		cmd.RequestID = hdr
	}
	if err != nil {
		return cmd, fmt.Errorf("not a resize command: %v", err)
	}
	if err := cmd.Validate(); err != nil {
		return cmd, err
	}
	if err := validRequestID(cmd.RequestID); err != nil {
		return cmd, err
	}
	if cmd.Source == "" {
		cmd.Source = contracts.SourceManual
	}
	return cmd, nil
}

// handle applies one delivered command exactly once. The stream sequence
// of the last applied command is stored with the pool state; a delivery at
// or below it is acked and skipped. A command's decision (new target) is
// stored, with its sequence, before any action, and a redelivery of that
// sequence resumes the work instead of deciding again.
func (m *manager) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		m.log.Error("resize message without metadata, terminated", "err", err)
		_ = msg.Term()
		return
	}
	seq := meta.Sequence.Stream
	cmd, perr := parseCommand(msg)
	if perr != nil {
		m.poison(ctx, msg, seq, cmd, perr)
		return
	}
	id := cmd.RequestID

	st, _, err := m.st.state(ctx)
	if err != nil {
		m.retryLater(ctx, msg, meta, err)
		return
	}
	if seq <= st.LastApplied {
		if st.Last != nil && st.Last.Seq == seq {
			if err := m.finishRecord(ctx, *st.Last, cmd); err != nil {
				m.retryLater(ctx, msg, meta, err)
				return
			}
		}
		m.ack(ctx, msg)
		return
	}
	if st.Current != nil && st.Current.Seq != seq {
		// An older decision whose message is gone (purged stream or
		// reset consumer): finish it before deciding this one.
		m.log.Warn("finishing an in-flight resize whose message is gone", "seq", st.Current.Seq)
		if err := m.complete(ctx, nil, *st.Current); err != nil {
			m.retryLater(ctx, msg, meta, err)
			return
		}
		if st, _, err = m.st.state(ctx); err != nil {
			m.retryLater(ctx, msg, meta, err)
			return
		}
	}

	cur := st.Current
	if cur == nil {
		if _, _, err := m.reqs.set(ctx, id, transition{Status: contracts.StateRunning, Sequence: seq, Command: &cmd}); err != nil {
			m.retryLater(ctx, msg, meta, err)
			return
		}
		tbl, _, err := m.st.table(ctx)
		if err != nil {
			m.retryLater(ctx, msg, meta, err)
			return
		}
		d := decide(cmd, st.Target, m.cfg.MaxNodes, m.available(st, tbl))
		if d.Reject != "" {
			out := outcome{Seq: seq, RequestID: id, Status: contracts.StateRejected, Reason: d.Reject, From: d.From, To: d.To}
			if _, err := m.st.update(ctx, func(s *poolRecord) error {
				s.LastApplied = max(s.LastApplied, seq)
				s.Last = &out
				return nil
			}); err != nil {
				m.retryLater(ctx, msg, meta, err)
				return
			}
			m.log.Info("resize rejected", "request_id", id, "seq", seq, "reason", d.Reject)
			if err := m.finishRecord(ctx, out, cmd); err != nil {
				m.retryLater(ctx, msg, meta, err) // the redelivery finishes the record
				return
			}
			m.ack(ctx, msg)
			return
		}
		next := &inflight{Seq: seq, AckSubject: msg.Reply(), Command: cmd, From: d.From, To: d.To}
		if _, err := m.st.update(ctx, func(s *poolRecord) error {
			if s.LastApplied >= seq || (s.Current != nil && s.Current.Seq != seq) {
				return fmt.Errorf("manager: state moved on while deciding seq %d: %w", seq, errConflict)
			}
			s.Target = d.To
			s.Current = next
			return nil
		}); err != nil {
			m.retryLater(ctx, msg, meta, err)
			return
		}
		cur = next
		m.log.Info("resize decided", "request_id", id, "seq", seq, "from", d.From, "to", d.To, "source", cmd.Source)
	} else if cur.AckSubject != msg.Reply() {
		cur.AckSubject = msg.Reply()
		_, _ = m.st.update(ctx, func(s *poolRecord) error {
			if s.Current != nil && s.Current.Seq == seq {
				s.Current.AckSubject = cur.AckSubject
			}
			return nil
		})
	}
	if err := m.complete(ctx, msg, *cur); err != nil {
		m.retryLater(ctx, msg, meta, err)
	}
}

// complete does the work of a decided command (reconciling the pool to its
// target), then stores its outcome, finishes its record and acks it. A
// provisioning failure ends it failed, with the target set back to the nodes
// actually active; any other error is returned and the caller has the
// command redelivered (the decision or the outcome stays stored, so the
// redelivery resumes or just finishes the record). msg may be nil for a
// command whose message is gone.
func (m *manager) complete(ctx context.Context, msg jetstream.Msg, cur inflight) error {
	id := cur.Command.RequestID
	stop := m.keepAlive(msg)
	err := m.reconcile(ctx, id)
	stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out := outcome{Seq: cur.Seq, RequestID: id, Status: contracts.StateApplied, From: cur.From, To: cur.To}
	if err != nil {
		if !isProvision(err) {
			_, _, _ = m.reqs.set(ctx, id, transition{Status: contracts.StateRunning, Detail: "retrying: " + err.Error()})
			return err
		}
		out.Status, out.Reason = contracts.StateFailed, err.Error()
	}
	if _, err := m.st.update(ctx, func(s *poolRecord) error {
		if out.Status == contracts.StateFailed {
			tbl, _, err := m.st.table(ctx)
			if err != nil {
				return err
			}
			s.Target = max(1, len(tbl.Nodes))
			out.To = s.Target
		}
		if s.Current != nil && s.Current.Seq == cur.Seq {
			s.Current = nil
		}
		s.LastApplied = max(s.LastApplied, cur.Seq)
		s.Last = &out
		if out.Status == contracts.StateApplied && out.From != out.To {
			s.LastResize = time.Now().UTC()
		}
		return nil
	}); err != nil {
		return err
	}
	m.log.Info("resize finished", "request_id", id, "seq", cur.Seq, "status", out.Status, "from", out.From, "to", out.To, "reason", out.Reason)
	if err := m.finishRecord(ctx, out, cur.Command); err != nil {
		return err // the redelivery (at or below last applied) finishes the record
	}
	if msg != nil {
		m.ack(ctx, msg)
	}
	return nil
}

// finishRecord stores a command's terminal outcome in its request record.
func (m *manager) finishRecord(ctx context.Context, out outcome, cmd contracts.ResizeCommand) error {
	_, _, err := m.reqs.set(ctx, out.RequestID, transition{Status: out.Status, Reason: out.Reason, Sequence: out.Seq, From: out.From, To: out.To, Command: &cmd})
	return err
}

// poison terminates an undecodable or invalid command and records it failed.
func (m *manager) poison(ctx context.Context, msg jetstream.Msg, seq uint64, cmd contracts.ResizeCommand, perr error) {
	m.log.Warn("invalid resize command terminated", "seq", seq, "err", perr)
	_ = msg.TermWithReason(perr.Error())
	id := cmd.RequestID
	if validRequestID(id) != nil {
		id = fmt.Sprintf("seq-%d", seq)
	}
	cmd.RequestID = id
	if _, _, err := m.reqs.set(ctx, id, transition{Status: contracts.StateFailed, Reason: "invalid command: " + perr.Error(), Sequence: seq, Command: &cmd}); err != nil {
		m.log.Warn("record poison command", "seq", seq, "err", err)
	}
}

// ack acknowledges msg and waits for the server's confirmation. A lost ack
// only causes a redelivery, which the stored sequence skips.
func (m *manager) ack(ctx context.Context, msg jetstream.Msg) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		m.log.Warn("ack resize command", "err", err)
	}
}

// retryLater asks for a redelivery after a backoff growing with the
// delivery count (transient failures: the bus, the KV store), or at once
// when the manager is stopping.
//
// The backoff is waited out here, holding the message, and only then is it
// nak'd for an immediate redelivery: a nak with a delay would free the
// consumer's single ack-pending slot at once and let the next command
// overtake this one, while an immediate redelivery is served before any
// newer message.
func (m *manager) retryLater(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, err error) {
	if ctx.Err() != nil {
		m.hold(msg) // stopping: the next Run takes it at once
		return
	}
	delay := 250 * time.Millisecond << min(meta.NumDelivered, 6)
	delay = min(delay, 10*time.Second)
	m.log.Warn("resize command will be retried", "seq", meta.Sequence.Stream, "delivered", meta.NumDelivered, "in", delay, "err", err)
	stop := m.keepAlive(msg)
	select {
	case <-ctx.Done():
		stop()
		m.hold(msg)
		return
	case <-time.After(delay):
	}
	stop()
	_ = msg.Nak()
}

// keepAlive tells the server every AckWait/3 that msg is still at work,
// until the returned stop is called.
func (m *manager) keepAlive(msg jetstream.Msg) (stop func()) {
	if msg == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(max(m.cfg.AckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// available is how many more nodes a command may bring in: unlimited (-1)
// when nodes are launched, the idle standby nodes not already needed to
// reach the current target otherwise.
func (m *manager) available(st poolRecord, tbl contracts.PartitionTable) int {
	if m.cfg.Provisioner != ProvisionerStandby {
		return -1
	}
	idle := len(m.reg.idleStandby(m.busy(st, tbl)))
	return max(0, idle-max(0, st.Target-len(tbl.Nodes)))
}
