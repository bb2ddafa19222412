package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Durable consumers: a named position in the event stream, with its pending deliveries, kept by
// the cluster (in the replicated state, so it survives leader changes and restarts). Fetch hands
// out events; each delivery must be acknowledged (Ack) within the consumer's ack wait, or it is
// delivered again with the next attempt number; Nak asks for it again at once. Deliveries are
// at least once. The next event of a key is delivered only after the previous one is
// acknowledged; events without a key have no order. Several clients fetching from one consumer
// share its events (a work queue). Consume runs that loop for a handler.
//
// For an effect on caucus itself exactly once, acknowledge in the transaction that applies the
// effect (OpAck): the transaction is refused, effect and all, when the event was acknowledged
// already or delivered again since.

type (
	// ConsumerConfig defines a consumer (zero fields take the server's defaults).
	ConsumerConfig = caucusv1.ConsumerConfig
	// ConsumerState is a consumer's configuration, progress and lag.
	ConsumerState = caucusv1.ConsumerState
	// Delivery is one delivery of an event: acknowledge it by passing it to Ack.
	Delivery = caucusv1.Delivery
)

// ConsumerCreate creates a consumer. Creating one that exists with the same configuration
// succeeds and changes nothing (so it is retried like a read); with another configuration it
// fails with AlreadyExists.
func (c *Client) ConsumerCreate(ctx context.Context, cfg *ConsumerConfig) (*ConsumerState, error) {
	req := &caucusv1.ConsumerCreateRequest{Config: cfg}
	resp, err := unary(ctx, c, "consumer create", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.ConsumerCreateResponse], error) {
		return ep.consumer.ConsumerCreate(ctx, connect.NewRequest(req))
	})
	if err != nil {
		return nil, err
	}
	return resp.Consumer, nil
}

// ConsumerDelete deletes a consumer and its pending deliveries (NotFound if there is none). It
// is retried only when the request provably was not applied.
func (c *Client) ConsumerDelete(ctx context.Context, name string) error {
	req := &caucusv1.ConsumerDeleteRequest{Name: name}
	_, err := unary(ctx, c, "consumer delete", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.ConsumerDeleteResponse], error) {
		return ep.consumer.ConsumerDelete(ctx, connect.NewRequest(req))
	})
	return err
}

// ConsumerInfo returns a consumer's state and lag.
func (c *Client) ConsumerInfo(ctx context.Context, name string) (*ConsumerState, error) {
	req := &caucusv1.ConsumerInfoRequest{Name: name}
	resp, err := unary(ctx, c, "consumer info", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.ConsumerInfoResponse], error) {
		return ep.consumer.ConsumerInfo(ctx, connect.NewRequest(req))
	})
	if err != nil {
		return nil, err
	}
	return resp.Consumer, nil
}

// ConsumerList returns every consumer's state, by name.
func (c *Client) ConsumerList(ctx context.Context) ([]*ConsumerState, error) {
	req := &caucusv1.ConsumerListRequest{}
	resp, err := unary(ctx, c, "consumer list", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.ConsumerListResponse], error) {
		return ep.consumer.ConsumerList(ctx, connect.NewRequest(req))
	})
	if err != nil {
		return nil, err
	}
	return resp.Consumers, nil
}

// Fetch asks for up to max deliveries of a consumer, waiting up to wait at the server when none
// is ready (a long poll; the server caps it at 30 s). It returns no delivery and no error when
// the wait ends empty. A fetch whose answer is lost in transit hands its events out anyway: they
// are delivered again after the ack wait.
func (c *Client) Fetch(ctx context.Context, name string, max int, wait time.Duration) ([]*Delivery, error) {
	req := &caucusv1.FetchRequest{Consumer: name, MaxEvents: int32(max), WaitMs: wait.Milliseconds()}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+c.cfg.RequestTimeout)
		defer cancel()
	}
	resp, err := unary(ctx, c, "fetch", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.FetchResponse], error) {
		return ep.consumer.Fetch(ctx, connect.NewRequest(req))
	})
	if err != nil {
		return nil, err
	}
	return resp.Deliveries, nil
}

// positions names deliveries for an ack or a nak.
func positions(ds []*Delivery) []*caucusv1.EventPosition {
	out := make([]*caucusv1.EventPosition, 0, len(ds))
	for _, d := range ds {
		out = append(out, &caucusv1.EventPosition{Revision: d.GetEvent().GetRevision(), Index: d.GetEvent().GetIndex(), Attempt: d.GetAttempt()})
	}
	return out
}

// Ack acknowledges deliveries, all or none, exactly once across retries. It fails with
// FailedPrecondition (IsFailedPrecondition) when one of them was delivered again since (its
// attempt is stale) or awaits no ack (acknowledged already, or dead-lettered).
func (c *Client) Ack(ctx context.Context, consumer string, ds ...*Delivery) error {
	return c.ack(ctx, &caucusv1.AckRequest{Consumer: consumer, Acks: positions(ds)})
}

// Nak asks for deliveries to be delivered again at once (each counts as an attempt).
func (c *Client) Nak(ctx context.Context, consumer string, ds ...*Delivery) error {
	return c.ack(ctx, &caucusv1.AckRequest{Consumer: consumer, Naks: positions(ds)})
}

func (c *Client) ack(ctx context.Context, req *caucusv1.AckRequest) error {
	_, err := unaryWrite(ctx, c, "ack", func(s *caucusv1.Session) { req.Session = s }, func(ctx context.Context, ep *endpoint) (*connect.Response[caucusv1.AckResponse], error) {
		return ep.consumer.Ack(ctx, connect.NewRequest(req))
	})
	return err
}

// OpAck returns an acknowledgement of deliveries, for a transaction: the events are
// acknowledged if, and only if, the branch that holds the op runs, and a refused ack (stale
// attempt, event not pending) refuses the whole transaction. Put the effect of handling the
// events and their ack in one transaction, and the effect happens exactly once.
func OpAck(consumer string, ds ...*Delivery) Op {
	return Op{typ: opAck, ack: &caucusv1.AckRequest{Consumer: consumer, Acks: positions(ds)}}
}

// Handler handles one delivery for Consume. A nil error acknowledges it; an error naks it (it
// is delivered again, up to the consumer's max_deliver attempts, then dead-lettered).
type Handler func(ctx context.Context, d *Delivery) error

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeOptions)

type consumeOptions struct {
	parallel int
	wait     time.Duration
	settled  func(d *Delivery, handlerErr, ackErr error)
}

// WithParallelism bounds the handlers Consume runs at once (default 16): events of different
// keys, or without a key, run in parallel; the events of one key run one after the other.
func WithParallelism(n int) ConsumeOption {
	return func(o *consumeOptions) { o.parallel = max(n, 1) }
}

// WithFetchWait sets how long each fetch waits at the server for events (default 5 s).
func WithFetchWait(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) { o.wait = d }
}

// WithSettled calls f once a delivery is settled: after its handler returned handlerErr and the
// ack (handlerErr nil) or nak that followed returned ackErr (nil: the cluster took it). For
// metrics and tests; it runs on the handler's goroutine.
func WithSettled(f func(d *Delivery, handlerErr, ackErr error)) ConsumeOption {
	return func(o *consumeOptions) { o.settled = f }
}

// maxFetchEvents is the most deliveries one fetch may ask for (the server's limit).
const maxFetchEvents = 1000

// ackTimeout bounds the acks and naks Consume sends, which outlive its context at shutdown.
const ackTimeout = 10 * time.Second

// Consume fetches the consumer's events and runs handler on each: events of different keys in
// parallel, those of one key in order, one at a time. It acknowledges a delivery when its
// handler returns nil and naks it otherwise, in batches. It fetches ahead of its handlers (up
// to 256 deliveries, or twice the parallelism), so that fetches, which are log commands, are
// not paid per event. When ctx ends, it stops fetching, naks the deliveries it holds but has not
// started (each counts as an attempt), lets the running handlers finish (their context is
// not canceled with ctx) and acknowledges them, then returns nil. It returns an error earlier
// only when fetching fails for good (the consumer does not exist, a bad argument).
func (c *Client) Consume(ctx context.Context, consumer string, handler Handler, opts ...ConsumeOption) error {
	o := consumeOptions{parallel: 16, wait: 5 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	// Deliveries are fetched ahead of the handlers, so that a fetch (a log command, a round
	// trip) is not paid for every few events; the handlers in flight stay bounded by parallel.
	buffer := max(consumeBuffer, 2*o.parallel)
	r := &consumeRun{c: c, consumer: consumer, handler: handler, settled: o.settled, hctx: context.WithoutCancel(ctx),
		queued: map[string][]*Delivery{}, running: map[string]bool{}, freed: make(chan struct{}, 1),
		slots: make(chan struct{}, o.parallel),
		acks:  make(chan settlement, maxAckBatch), ackerDone: make(chan struct{})}
	go r.acker()
	defer r.shutdown()
	for try := 0; ctx.Err() == nil; {
		free := buffer - r.holding()
		if free <= 0 {
			select {
			case <-r.freed:
			case <-ctx.Done():
			}
			continue
		}
		ds, err := c.Fetch(ctx, consumer, min(free, maxFetchEvents), o.wait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !IsUnavailable(err) && !IsDeadlineExceeded(err) {
				return fmt.Errorf("client: consume %q: %w", consumer, err)
			}
			try++
			c.log.Debug("caucus client: fetch failed, retrying", "consumer", consumer, "err", err)
			if sleepCtx(ctx, backoff(try)) != nil {
				break
			}
			continue
		}
		try = 0
		for _, d := range ds {
			r.dispatch(d)
		}
	}
	return nil
}

// consumeRun is the state of one Consume: the deliveries held, by key.
type consumeRun struct {
	c        *Client
	consumer string
	handler  Handler
	settled  func(d *Delivery, handlerErr, ackErr error)
	hctx     context.Context

	mu       sync.Mutex
	held     int                    // deliveries fetched and not yet finished
	queued   map[string][]*Delivery // per key, deliveries behind the running one
	running  map[string]bool        // keys with a handler running
	stopping bool
	wg       sync.WaitGroup
	freed    chan struct{} // a delivery finished (capacity 1: a hint)

	// Acks and naks are sent in batches by one goroutine (acker), so a handler's slot is free
	// as soon as it returns: a consumer's throughput is then not its handlers in flight over
	// the ack latency. Per-key order does not need the slot: the cluster hands out a key's
	// next event only after the previous one's ack is committed.
	acks      chan settlement
	ackerDone chan struct{}
	// slots bounds the handlers running at once (WithParallelism).
	slots chan struct{}
}

// settlement is a finished delivery waiting for its ack (handlerErr nil) or nak.
type settlement struct {
	d          *Delivery
	handlerErr error
}

// maxAckBatch bounds the deliveries one ack request settles.
const maxAckBatch = 256

// consumeBuffer is how many deliveries Consume holds, fetched and not yet handled, at least.
const consumeBuffer = 256

// errStopping naks the deliveries Consume fetched but had not started when its context ended.
var errStopping = errors.New("client: consume stopping")

func (r *consumeRun) holding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// dispatch runs d now, or queues it behind the running delivery of its key.
func (r *consumeRun) dispatch(d *Delivery) {
	key := string(d.GetEvent().GetKey())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held++
	if key != "" {
		if r.running[key] {
			r.queued[key] = append(r.queued[key], d)
			return
		}
		r.running[key] = true
	}
	r.start(d)
}

// start runs the handler of d; r.mu is held.
func (r *consumeRun) start(d *Delivery) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for d != nil {
			r.slots <- struct{}{}
			r.mu.Lock()
			stopping := r.stopping
			r.mu.Unlock()
			err := errStopping
			if !stopping {
				err = r.handle(d)
			}
			<-r.slots
			r.settle(d, err)
			d = r.next(d)
		}
	}()
}

// handle runs the handler, turning a panic into an error (so the delivery is nakked).
func (r *consumeRun) handle(d *Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("client: consume %q: handler panicked: %v", r.consumer, p)
		}
	}()
	return r.handler(r.hctx, d)
}

// settle queues d's ack, or its nak after its handler returned err.
func (r *consumeRun) settle(d *Delivery, err error) {
	if err != nil {
		r.c.log.Debug("caucus client: handler failed, nak", "consumer", r.consumer, "revision", d.GetEvent().GetRevision(),
			"index", d.GetEvent().GetIndex(), "attempt", d.GetAttempt(), "err", err)
	}
	r.acks <- settlement{d: d, handlerErr: err}
}

// acker sends the queued acks and naks: whatever is queued when it is free, in one request.
// A request is all or nothing, so when one of a batch is refused (delivered again meanwhile)
// the batch is sent again one by one, to settle the others.
func (r *consumeRun) acker() {
	defer close(r.ackerDone)
	for s := range r.acks {
		batch := []settlement{s}
	fill:
		for len(batch) < maxAckBatch {
			select {
			case s, ok := <-r.acks:
				if !ok {
					break fill
				}
				batch = append(batch, s)
			default:
				break fill
			}
		}
		err := r.send(batch)
		for _, s := range batch {
			if err != nil && len(batch) > 1 && IsFailedPrecondition(err) {
				r.finish(s, r.send([]settlement{s}))
			} else {
				r.finish(s, err)
			}
		}
	}
}

// send acks and naks a batch in one request.
func (r *consumeRun) send(batch []settlement) error {
	req := &caucusv1.AckRequest{Consumer: r.consumer}
	for _, s := range batch {
		p := positions([]*Delivery{s.d})[0]
		if s.handlerErr == nil {
			req.Acks = append(req.Acks, p)
		} else {
			req.Naks = append(req.Naks, p)
		}
	}
	ctx, cancel := context.WithTimeout(r.hctx, ackTimeout)
	defer cancel()
	return r.c.ack(ctx, req)
}

// finish reports how s was settled.
func (r *consumeRun) finish(s settlement, aerr error) {
	d, err := s.d, s.handlerErr
	if r.settled != nil {
		r.settled(d, err, aerr)
	}
	switch {
	case aerr == nil:
	case IsFailedPrecondition(aerr):
		// Delivered again meanwhile (the handler outlived the ack wait): the newer delivery
		// decides.
		r.c.log.Debug("caucus client: ack refused", "consumer", r.consumer, "revision", d.GetEvent().GetRevision(), "attempt", d.GetAttempt(), "err", aerr)
	default:
		r.c.log.Warn("caucus client: ack failed; the event will be delivered again", "consumer", r.consumer,
			"revision", d.GetEvent().GetRevision(), "index", d.GetEvent().GetIndex(), "err", aerr)
	}
}

// next finishes d and returns the next delivery of its key to run, if any.
func (r *consumeRun) next(d *Delivery) *Delivery {
	key := string(d.GetEvent().GetKey())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held--
	select {
	case r.freed <- struct{}{}:
	default:
	}
	if key == "" {
		return nil
	}
	if q := r.queued[key]; len(q) > 0 && !r.stopping {
		r.queued[key] = q[1:]
		return q[0]
	}
	delete(r.running, key)
	return nil
}

// shutdown naks the deliveries not started and waits for the running handlers and their acks.
func (r *consumeRun) shutdown() {
	r.mu.Lock()
	r.stopping = true
	var left []*Delivery
	for k, q := range r.queued {
		left = append(left, q...)
		r.held -= len(q)
		delete(r.queued, k)
	}
	r.mu.Unlock()
	if len(left) > 0 {
		ctx, cancel := context.WithTimeout(r.hctx, ackTimeout)
		var errs []error
		for _, d := range left {
			if err := r.c.Nak(ctx, r.consumer, d); err != nil && !IsFailedPrecondition(err) {
				errs = append(errs, err)
			}
		}
		cancel()
		if err := errors.Join(errs...); err != nil {
			r.c.log.Debug("caucus client: nak at shutdown failed; the events will be delivered again after the ack wait", "consumer", r.consumer, "err", err)
		}
	}
	r.wg.Wait()
	close(r.acks)
	<-r.ackerDone
}
