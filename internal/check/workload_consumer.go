package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/check/history"
	"github.com/caucus/caucus/internal/check/model"
)

// --- consumer ---

// consumerWorkload publishes events with unique ids and consumes them through one durable
// consumer in the exactly-once mode: each delivery is processed by one transaction that writes
// an effect key (<prefix>effect/<event id>/<attempt>) and acknowledges the delivery
// (RequestOp.request_ack), so a stale attempt or an event acknowledged already refuses the
// effect with the ack. Some consumers crash mid-batch, dropping their deliveries unacknowledged,
// and some are slow past the ack wait, so redelivery and stale attempts are exercised. The final
// phase drains the consumer and reads every effect; model.CheckConsumer judges the history.
type consumerWorkload struct {
	keys int
	// ackWait is short, so that dropped deliveries come back within the run.
	ackWait time.Duration
	// ackApart plants the bug of at-least-once processing (tests only): the effect is written,
	// then acknowledged in a request of its own, and a crash between the two redelivers an
	// event whose effect is already there.
	ackApart bool
	// consumer and topic are set by setup, before the workers start.
	consumer, topic string
}

// consumerMaxDeliver is as high as the server allows: an event dead-lettered after repeated
// drops would have no effect and be reported lost, although the consumer did what it was told.
const consumerMaxDeliver = 1000

func (c *consumerWorkload) name() string { return "consumer" }

func (c *consumerWorkload) effectPrefix(e *env) string { return e.prefix + "effect/" }

// setup creates the consumer of the run's topic, starting at the revision after the current one
// so that it selects every event of the run. Creating it again with the same configuration (a
// retry after an unknown outcome) changes nothing.
func (c *consumerWorkload) setup(ctx context.Context, e *env) error {
	c.consumer = strings.ReplaceAll(strings.TrimSuffix(e.prefix, "/"), "/", "-")
	c.topic = e.prefix + "events"
	var rev int64
	var last error
	for _, ep := range append(e.eps, e.eps...) {
		actx, cancel := context.WithTimeout(ctx, 3*e.opTimeout)
		resp, err := ep.kv.Range(actx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte(e.prefix)}))
		cancel()
		if err == nil {
			rev = resp.Msg.GetHeader().GetRevision()
			break
		}
		last = err
	}
	if rev == 0 {
		return fmt.Errorf("check: consumer setup: read the revision: %w", last)
	}
	cfg := &caucusv1.ConsumerConfig{
		Name:          c.consumer,
		Topics:        []string{c.topic},
		StartRevision: rev + 1,
		AckWaitMs:     c.ackWait.Milliseconds(),
		MaxDeliver:    consumerMaxDeliver,
	}
	// A new cluster refuses consumers (FailedPrecondition) until every member has published
	// that it applies the log format that has them: retry until the setup's deadline.
	for i := 0; ctx.Err() == nil; i++ {
		ep := e.eps[i%len(e.eps)]
		actx, cancel := context.WithTimeout(ctx, 3*e.opTimeout)
		_, err := ep.consumers.ConsumerCreate(actx, connect.NewRequest(&caucusv1.ConsumerCreateRequest{Config: cfg}))
		cancel()
		if err == nil {
			return nil
		}
		last = err
		pause(ctx, 200*time.Millisecond)
	}
	return fmt.Errorf("check: consumer setup: create consumer %q: %w", c.consumer, last)
}

func (c *consumerWorkload) step(ctx context.Context, e *env, w *worker) {
	if w.rng.Float64() < 0.5 {
		c.publish(ctx, e, w)
		return
	}
	ds, ok := c.fetch(ctx, e, w, 4, 100*time.Millisecond)
	if !ok || len(ds) == 0 {
		return
	}
	// A consumer that crashes drops the rest of its batch unacknowledged: the ack wait must
	// bring those events back. A slow one answers after its deliveries may have been handed
	// to someone else: its stale attempts must be refused, effect and all.
	crashAt := len(ds)
	if w.rng.Float64() < 0.05 {
		crashAt = w.rng.IntN(len(ds))
	}
	if w.rng.Float64() < 0.02 {
		pause(ctx, c.ackWait+300*time.Millisecond)
	}
	for _, d := range ds[:crashAt] {
		c.process(ctx, e, w, d)
	}
	if crashAt < len(ds) {
		w.crash(e)
	}
}

// publish publishes one event with a unique id, by Events.Publish or with a put, under the
// worker's session (exactly once across retries).
func (c *consumerWorkload) publish(ctx context.Context, e *env, w *worker) {
	id := "e" + strconv.FormatInt(e.counter.Add(1), 10)
	key := ""
	if w.rng.Float64() < 0.9 {
		key = "k" + strconv.Itoa(w.rng.IntN(c.keys))
	}
	ev := &caucusv1.Event{Topic: c.topic, Key: []byte(key), Payload: []byte(id), Id: id}
	in := model.ConsumerPublish{ID: id, Key: key, Via: "publish"}
	if w.rng.Float64() < 0.5 {
		in.Via = "put"
	}
	e.writeOn(ctx, w, in, func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error) {
		var h *caucusv1.ResponseHeader
		var ids []string
		if in.Via == "put" {
			resp, err := ep.kv.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{
				Key: []byte(e.prefix + "pub/" + id), Value: []byte(id), Session: s, Events: []*caucusv1.Event{ev}}))
			if err != nil {
				return nil, err
			}
			h, ids = resp.Msg.GetHeader(), resp.Msg.GetEventIds()
		} else {
			resp, err := ep.events.Publish(ctx, connect.NewRequest(&caucusv1.PublishRequest{Events: []*caucusv1.Event{ev}, Session: s}))
			if err != nil {
				return nil, err
			}
			h, ids = resp.Msg.GetHeader(), resp.Msg.GetEventIds()
		}
		if len(ids) != 1 || ids[0] != id {
			// Recorded as an answer, not retried: the checker reports the event under both.
			return model.ConsumerPublishResult{Revision: h.GetRevision(), EventIDs: ids}, nil
		}
		return model.ConsumerPublishResult{Revision: h.GetRevision()}, nil
	})
}

// fetch asks for up to max deliveries, waiting up to wait at the server. A fetch is a command of
// the log, and its answer may be lost after it applied: then the outcome is unknown (its
// deliveries come back after the ack wait) and the worker moves to a new process.
func (c *consumerWorkload) fetch(ctx context.Context, e *env, w *worker, max int, wait time.Duration) ([]*caucusv1.Delivery, bool) {
	ep := w.endpoint(e)
	op := e.rec.Invoke(w.process, ep.url, model.ConsumerFetch{Max: max})
	actx, cancel := context.WithTimeout(ctx, e.opTimeout+wait)
	resp, err := ep.consumers.Fetch(actx, connect.NewRequest(&caucusv1.FetchRequest{Consumer: c.consumer, MaxEvents: int32(max), WaitMs: wait.Milliseconds()}))
	cancel()
	if err != nil {
		err = fmt.Errorf("%s: %w", ep.url, err)
		if neverSent(err) || connect.CodeOf(err) == connect.CodeInvalidArgument {
			e.rec.Complete(op, history.Fail, nil, err)
		} else {
			e.rec.Complete(op, history.Unknown, nil, err)
			w.crash(e)
		}
		return nil, false
	}
	out := model.ConsumerFetchResult{Deliveries: []model.ConsumerDelivery{}}
	for _, d := range resp.Msg.Deliveries {
		out.Deliveries = append(out.Deliveries, deliveryOf(d))
	}
	e.rec.Complete(op, history.OK, out, nil)
	return resp.Msg.Deliveries, true
}

func deliveryOf(d *caucusv1.Delivery) model.ConsumerDelivery {
	ev := d.GetEvent()
	return model.ConsumerDelivery{ID: ev.GetId(), Key: string(ev.GetKey()), Revision: ev.GetRevision(), Index: ev.GetIndex(), Attempt: d.GetAttempt()}
}

// process writes the delivery's effect and acknowledges it in one transaction.
func (c *consumerWorkload) process(ctx context.Context, e *env, w *worker, d *caucusv1.Delivery) {
	dv := deliveryOf(d)
	val, err := json.Marshal(dv)
	if err != nil {
		panic(err) // a struct of strings and integers always encodes
	}
	key := []byte(c.effectPrefix(e) + dv.ID + "/" + strconv.Itoa(int(dv.Attempt)))
	ack := &caucusv1.AckRequest{Consumer: c.consumer, Acks: []*caucusv1.EventPosition{{Revision: dv.Revision, Index: dv.Index, Attempt: dv.Attempt}}}
	if c.ackApart {
		c.processApart(ctx, e, w, dv, key, val, ack)
		return
	}
	e.writeOn(ctx, w, model.ConsumerProcess{ConsumerDelivery: dv}, func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error) {
		resp, err := ep.kv.Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{
			Success: []*caucusv1.RequestOp{
				{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: key, Value: val}}},
				{Request: &caucusv1.RequestOp_RequestAck{RequestAck: ack}},
			},
			Session: s,
		}))
		if err != nil {
			return nil, err
		}
		if !resp.Msg.Succeeded {
			return nil, errors.New("check: a transaction without compares did not succeed")
		}
		return model.ConsumerProcessResult{Revision: resp.Msg.GetHeader().GetRevision()}, nil
	})
}

// processApart is the planted bug: the effect and the ack in two requests, with a crash between
// them now and then. The process op is recorded as the effect's write.
func (c *consumerWorkload) processApart(ctx context.Context, e *env, w *worker, dv model.ConsumerDelivery, key, val []byte, ack *caucusv1.AckRequest) {
	_, st := e.writeOn(ctx, w, model.ConsumerProcess{ConsumerDelivery: dv}, func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error) {
		resp, err := ep.kv.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: key, Value: val, Session: s}))
		if err != nil {
			return nil, err
		}
		return model.ConsumerProcessResult{Revision: resp.Msg.GetHeader().GetRevision()}, nil
	})
	if st != history.OK || w.rng.Float64() < 0.05 {
		return
	}
	w.seq++
	ack.Session = &caucusv1.Session{ClientId: w.session, Sequence: w.seq}
	actx, cancel := context.WithTimeout(ctx, e.opTimeout)
	defer cancel()
	if _, err := w.endpoint(e).consumers.Ack(actx, connect.NewRequest(ack)); err != nil {
		w.crash(e) // the ack's session may hold a write in flight
	}
}

func (c *consumerWorkload) info(ctx context.Context, e *env, w *worker) (model.ConsumerInfoResult, bool) {
	out, ok := e.readOn(ctx, w, model.ConsumerInfoRead{}, func(ctx context.Context, ep endpoint) (any, error) {
		resp, err := ep.consumers.ConsumerInfo(ctx, connect.NewRequest(&caucusv1.ConsumerInfoRequest{Name: c.consumer}))
		if err != nil {
			return nil, err
		}
		st := resp.Msg.GetConsumer()
		return model.ConsumerInfoResult{Lag: st.GetLagEvents(), Pending: st.GetPending(), Redelivered: st.GetRedelivered(),
			DeadLettered: st.GetDeadLettered(), Stalled: st.GetStalled()}, nil
	})
	if !ok {
		return model.ConsumerInfoResult{}, false
	}
	return out.(model.ConsumerInfoResult), true
}

// drainBudget bounds the drain of the final phase; the rest of the final budget is left for
// the read of the effects, which is the evidence either way.
const drainBudget = 40 * time.Second

// final drains the consumer (until it has no lag and nothing pending) and reads every effect.
func (c *consumerWorkload) final(ctx context.Context, e *env, w *worker) error {
	dctx, cancel := context.WithTimeout(ctx, drainBudget)
	var drainErr error
	for {
		st, ok := c.info(dctx, e, w)
		if ok && st.Lag == 0 && st.Pending == 0 {
			break
		}
		if dctx.Err() != nil {
			drainErr = fmt.Errorf("check: the consumer was not drained within %v (last state: %+v)", drainBudget, st)
			break
		}
		ds, _ := c.fetch(dctx, e, w, 100, 500*time.Millisecond)
		for _, d := range ds {
			c.process(dctx, e, w, d)
		}
	}
	cancel()
	readErr := retryFinal(ctx, "read of the effects", func() bool { return c.readEffects(ctx, e, w) })
	return errors.Join(drainErr, readErr)
}

func (c *consumerWorkload) readEffects(ctx context.Context, e *env, w *worker) bool {
	_, ok := e.read(ctx, w, model.ConsumerEffectsRead{Final: true}, func(ctx context.Context, kv caucusv1connect.KVClient) (any, error) {
		kvs, _, err := rangePrefix(ctx, kv, c.effectPrefix(e), false)
		if err != nil {
			return nil, err
		}
		out := model.ConsumerEffectsResult{Effects: []model.ConsumerEffect{}}
		for _, p := range kvs {
			var ef model.ConsumerEffect
			if err := json.Unmarshal(p.Value, &ef.ConsumerDelivery); err != nil {
				return nil, fmt.Errorf("check: effect %q=%q: %w", p.Key, p.Value, err)
			}
			if want := c.effectPrefix(e) + ef.ID + "/" + strconv.Itoa(int(ef.Attempt)); string(p.Key) != want {
				return nil, fmt.Errorf("check: effect %q holds %q, which belongs under %q", p.Key, p.Value, want)
			}
			ef.ModRevision = p.ModRevision
			out.Effects = append(out.Effects, ef)
		}
		return out, nil
	})
	return ok
}

func (c *consumerWorkload) check(ops []history.Op, _ time.Duration) checked {
	return checked{Result: model.CheckConsumer(ops)}
}
