package check

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/check/history"
	"github.com/caucus/caucus/internal/check/model"
)

// --- watch ---

// watchWorkload runs watchers and writers. The first workers are watchers: each streams the
// run's key changes and events (Events.Watch) from the run's start revision against its own
// member, ends its streams itself now and then, and resumes from the revision after the last
// one its stream reported complete, on the next member when the stream failed. The others
// write: events published alone, puts and transactions that publish, deletes that publish.
// After the faults heal a reference stream is read from one member and every watcher is
// caught up to the final revision; model.CheckWatch compares them.
type watchWorkload struct {
	keys     int
	watchers int
	// states[i] is watcher i's; only its worker touches it during the run, only final after.
	states []*watcherState
	// skipOnResume plants a gap (tests only): a resumed stream starts a revision late, while
	// the history records the right start.
	skipOnResume bool
	// topic and start are set by setup, before the workers start.
	topic string
	start int64
}

// watcherState is how far a watcher got.
type watcherState struct {
	id int
	// home is the member it watches; next the member of its next stream (another one after a
	// failed stream, home again after a stream it ended itself).
	home, next int
	// complete is the revision through which its view is complete; partial the items of
	// revision complete+1 it has already (the first parts of a split revision), which a new
	// stream sends again and it skips.
	complete int64
	partial  int
}

func newWatchWorkload(keys, clients int, skipOnResume bool) *watchWorkload {
	c := &watchWorkload{keys: keys, watchers: max(1, clients/2), skipOnResume: skipOnResume}
	for i := range c.watchers {
		c.states = append(c.states, &watcherState{id: i, home: i, next: i})
	}
	return c
}

func (c *watchWorkload) name() string { return "watch" }

func (c *watchWorkload) keyPrefix(e *env) string { return e.prefix + "w/" }

// setup waits until the cluster publishes events (a new cluster refuses them until every member
// applies the log format that has them), with an event of a topic the watchers do not select,
// and takes the revision after it as the run's start.
func (c *watchWorkload) setup(ctx context.Context, e *env) error {
	c.topic = e.prefix + "events"
	var last error
	for i := 0; ctx.Err() == nil; i++ {
		ep := e.eps[i%len(e.eps)]
		actx, cancel := context.WithTimeout(ctx, 3*e.opTimeout)
		resp, err := ep.events.Publish(actx, connect.NewRequest(&caucusv1.PublishRequest{Events: []*caucusv1.Event{{Topic: e.prefix + "setup"}}}))
		cancel()
		if err == nil {
			c.start = resp.Msg.GetHeader().GetRevision() + 1
			for _, st := range c.states {
				st.complete = c.start - 1
				st.home %= len(e.eps)
				st.next = st.home
			}
			return nil
		}
		last = err
		pause(ctx, 200*time.Millisecond)
	}
	return fmt.Errorf("check: watch setup: publish: %w", last)
}

func (c *watchWorkload) step(ctx context.Context, e *env, w *worker) {
	if w.id < c.watchers {
		c.stream(ctx, e, w, c.states[w.id], time.Second+time.Duration(w.rng.IntN(3000))*time.Millisecond, 0)
		return
	}
	c.write(ctx, e, w)
}

// write performs one write that publishes events with unique ids (and puts a unique value).
func (c *watchWorkload) write(ctx context.Context, e *env, w *worker) {
	n := strconv.FormatInt(e.counter.Add(1), 10)
	key := "w/k" + strconv.Itoa(w.rng.IntN(c.keys))
	events := func(k int) ([]*caucusv1.Event, []string) {
		var evs []*caucusv1.Event
		var ids []string
		for i := range k {
			id := "e" + n
			if k > 1 {
				id += "-" + strconv.Itoa(i)
			}
			evs = append(evs, &caucusv1.Event{Topic: c.topic, Key: []byte(key), Payload: []byte(id), Id: id})
			ids = append(ids, id)
		}
		return evs, ids
	}
	full := []byte(e.prefix + key)
	var in model.WatchWrite
	var do func(ctx context.Context, ep endpoint, s *caucusv1.Session) (*caucusv1.ResponseHeader, error)
	switch x := w.rng.Float64(); {
	case x < 0.35:
		evs, ids := events(1 + w.rng.IntN(3))
		in = model.WatchWrite{Via: "publish", Events: ids}
		do = func(ctx context.Context, ep endpoint, s *caucusv1.Session) (*caucusv1.ResponseHeader, error) {
			resp, err := ep.events.Publish(ctx, connect.NewRequest(&caucusv1.PublishRequest{Events: evs, Session: s}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetHeader(), nil
		}
	case x < 0.65:
		evs, ids := events(w.rng.IntN(2))
		in = model.WatchWrite{Via: "put", Key: key, Value: n, Events: ids}
		do = func(ctx context.Context, ep endpoint, s *caucusv1.Session) (*caucusv1.ResponseHeader, error) {
			resp, err := ep.kv.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: full, Value: []byte(n), Events: evs, Session: s}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetHeader(), nil
		}
	case x < 0.9:
		evs, ids := events(2)
		in = model.WatchWrite{Via: "txn", Key: key, Value: n, Events: ids}
		do = func(ctx context.Context, ep endpoint, s *caucusv1.Session) (*caucusv1.ResponseHeader, error) {
			resp, err := ep.kv.Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{
				Success: []*caucusv1.RequestOp{
					{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: full, Value: []byte(n)}}},
					{Request: &caucusv1.RequestOp_RequestPublish{RequestPublish: &caucusv1.PublishRequest{Events: evs}}},
				},
				Session: s,
			}))
			if err != nil {
				return nil, err
			}
			if !resp.Msg.Succeeded {
				return nil, errors.New("check: a transaction without compares did not succeed")
			}
			return resp.Msg.GetHeader(), nil
		}
	default:
		evs, ids := events(1)
		in = model.WatchWrite{Via: "delete", Key: key, Events: ids}
		do = func(ctx context.Context, ep endpoint, s *caucusv1.Session) (*caucusv1.ResponseHeader, error) {
			resp, err := ep.kv.DeleteRange(ctx, connect.NewRequest(&caucusv1.DeleteRangeRequest{Key: full, Events: evs, Session: s}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetHeader(), nil
		}
	}
	e.writeOn(ctx, w, in, func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error) {
		h, err := do(ctx, ep, s)
		if err != nil {
			return nil, err
		}
		return model.WatchWriteResult{Revision: h.GetRevision()}, nil
	})
}

func (c *watchWorkload) request(e *env, start int64) *caucusv1.WatchRequest {
	p := []byte(c.keyPrefix(e))
	return &caucusv1.WatchRequest{Key: p, RangeEnd: prefixEnd(p), Topics: []string{c.topic}, StartRevision: start, ProgressNotify: true}
}

// itemOf reduces a watch item to what the checker compares (keys without the run's prefix).
func itemOf(e *env, it *caucusv1.WatchItem) model.WatchItem {
	if ch := it.GetChange(); ch != nil {
		out := model.WatchItem{Kind: "put", Revision: ch.GetKv().GetModRevision(), Index: -1,
			Key: strings.TrimPrefix(string(ch.GetKv().GetKey()), e.prefix), Value: string(ch.GetKv().GetValue())}
		if ch.GetType() == caucusv1.WatchChange_DELETE {
			out.Kind, out.Value = "delete", ""
		}
		return out
	}
	ev := it.GetEvent()
	return model.WatchItem{Kind: "event", Revision: ev.GetRevision(), Index: ev.GetIndex(), ID: ev.GetId()}
}

// stream runs one stream of watcher st for up to d, or until its view is complete through
// until (if until > 0), and records what it saw. It reports whether st reached until.
func (c *watchWorkload) stream(ctx context.Context, e *env, w *worker, st *watcherState, d time.Duration, until int64) bool {
	ep := e.eps[st.next%len(e.eps)]
	op := e.rec.Invoke(w.process, ep.url, model.WatchStream{Watcher: st.id, Start: st.complete + 1})
	// The watcher ends the stream by cancelling it, not with a deadline: a deadline travels to
	// the member, which would end the stream itself, and that is not told from a failure.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(d, cancel)
	defer timer.Stop()
	out := model.WatchStreamResult{Items: []model.WatchItem{}}
	received := false
	from := st.complete + 1
	if c.skipOnResume && st.complete >= c.start {
		from++
	}
	stream, err := ep.events.Watch(sctx, connect.NewRequest(c.request(e, from)))
	if err == nil {
		skip := st.partial
		for stream.Receive() {
			received = true
			msg := stream.Msg()
			var kept []model.WatchItem
			for _, it := range msg.GetItems() {
				wi := itemOf(e, it)
				if skip > 0 && wi.Revision == st.complete+1 {
					skip--
					continue
				}
				skip = 0
				kept = append(kept, wi)
			}
			out.Items = append(out.Items, kept...)
			if h := msg.GetHeader().GetRevision(); h > st.complete {
				st.complete, st.partial = h, 0
			}
			for _, wi := range kept {
				if wi.Revision == st.complete+1 {
					st.partial++
				}
			}
			if until > 0 && st.complete >= until {
				break
			}
		}
		err = stream.Err()
		stream.Close()
	}
	out.Complete = st.complete
	reached := until > 0 && st.complete >= until
	if reached || sctx.Err() != nil && ctx.Err() == nil {
		// The watcher ended the stream itself: back home next time.
		err, st.next = nil, st.home
	} else {
		out.End = fmt.Sprintf("%s: %v", ep.url, err)
		st.next++
	}
	switch {
	case received:
		e.rec.Complete(op, history.OK, out, nil)
	default:
		// Nothing arrived: nothing was observed.
		if err == nil {
			err = errors.New("no response before the watcher ended the stream")
		}
		e.rec.Complete(op, history.Fail, nil, fmt.Errorf("%s: %w", ep.url, err))
		pause(ctx, 100*time.Millisecond)
	}
	return reached
}

// final reads the reference stream from the start revision through the revision after every
// write, then catches every watcher up to it.
func (c *watchWorkload) final(ctx context.Context, e *env, w *worker) error {
	var final int64
	i := 0
	if err := retryFinal(ctx, "read of the revision", func() bool {
		ep := e.eps[i%len(e.eps)]
		i++
		actx, cancel := context.WithTimeout(ctx, e.opTimeout)
		defer cancel()
		resp, err := ep.kv.Range(actx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte(c.keyPrefix(e))}))
		if err != nil {
			return false
		}
		final = resp.Msg.GetHeader().GetRevision()
		return true
	}); err != nil {
		return err
	}
	if err := retryFinal(ctx, "read of the reference stream", func() bool {
		ep := e.eps[i%len(e.eps)]
		i++
		return c.reference(ctx, e, w, ep, final)
	}); err != nil {
		return err
	}
	var errs []error
	for _, st := range c.states {
		var err error
		op := e.rec.Invoke(w.process, "", model.WatchCaughtUp{Watcher: st.id})
		for !c.stream(ctx, e, w, st, 10*time.Second, final) {
			if ctx.Err() != nil {
				err = fmt.Errorf("check: watcher %d complete through %d, not %d: %w", st.id, st.complete, final, ctx.Err())
				break
			}
			pause(ctx, 100*time.Millisecond)
		}
		if err != nil {
			e.rec.Complete(op, history.Fail, nil, err)
			errs = append(errs, err)
			continue
		}
		e.rec.Complete(op, history.OK, nil, nil)
	}
	return errors.Join(errs...)
}

// reference reads the stream of the run from ep, from the start revision through final.
func (c *watchWorkload) reference(ctx context.Context, e *env, w *worker, ep endpoint, final int64) bool {
	op := e.rec.Invoke(w.process, ep.url, model.WatchReference{Start: c.start, Final: final})
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out := model.WatchReferenceResult{Items: []model.WatchItem{}}
	stream, err := ep.events.Watch(sctx, connect.NewRequest(c.request(e, c.start)))
	if err == nil {
		defer stream.Close()
		for stream.Receive() {
			msg := stream.Msg()
			for _, it := range msg.GetItems() {
				if wi := itemOf(e, it); wi.Revision <= final {
					out.Items = append(out.Items, wi)
				}
			}
			if msg.GetHeader().GetRevision() >= final {
				e.rec.Complete(op, history.OK, out, nil)
				return true
			}
		}
		err = stream.Err()
	}
	e.rec.Complete(op, history.Fail, nil, fmt.Errorf("%s: the reference stream ended before revision %d: %w", ep.url, final, err))
	return false
}

func (c *watchWorkload) check(ops []history.Op, _ time.Duration) checked {
	return checked{Result: model.CheckWatch(ops)}
}
