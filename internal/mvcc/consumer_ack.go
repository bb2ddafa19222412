package mvcc

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Acknowledging: an ack forgets a delivery (and lets the next event of its key go out), a nak
// makes it due at once. Both name the attempt they answer: an older attempt than the latest
// delivery is refused (ErrStaleAttempt), and so is an event that awaits no ack (ErrNotPending),
// so that a transaction that applies an effect and acknowledges its event (RequestOp
// request_ack) applies at most once per event: a second copy finds the event acknowledged, or
// redelivered to someone else, and is refused as a whole.

// checkAck checks an ack against the consumer's pending deliveries; it writes nothing.
func (b *Batch) checkAck(a *logpb.AckRequest) (*consumer, error) {
	c, err := b.loadConsumer(a.GetConsumer())
	if err != nil {
		return nil, err
	}
	for _, list := range [][]*logpb.EventPosition{a.GetAcks(), a.GetNaks()} {
		for _, ep := range list {
			p := position{ep.GetRevision(), ep.GetIndex()}
			v := b.cons.pending.Get(pendingKey(c.name, p))
			if v == nil {
				return nil, errorf(ErrNotPending, "consumer %q, event %s: acknowledged or dead-lettered already, never delivered, or not selected", c.name, p)
			}
			e, err := decodePending(v)
			if err != nil {
				b.fail(err)
				return nil, err
			}
			switch {
			case e.attempt == 0:
				return nil, errorf(ErrNotPending, "consumer %q, event %s: not delivered yet (it waits for an earlier event of its key)", c.name, p)
			case ep.GetAttempt() < e.attempt:
				return nil, errorf(ErrStaleAttempt, "consumer %q, event %s: attempt %d, delivered again as attempt %d", c.name, p, ep.GetAttempt(), e.attempt)
			case ep.GetAttempt() > e.attempt:
				return nil, errorf(ErrNotPending, "consumer %q, event %s: attempt %d was never delivered (latest %d)", c.name, p, ep.GetAttempt(), e.attempt)
			}
		}
	}
	return c, nil
}

// doAck applies an ack that checkAck accepted. Events it no longer finds pending (named by an
// earlier ack op of the same transaction) are skipped.
func (b *Batch) doAck(a *logpb.AckRequest) *logpb.AckResponse {
	c, err := b.loadConsumer(a.GetConsumer())
	if err != nil {
		b.fail(fmt.Errorf("ack of a consumer checked before: %w", err))
		return nil
	}
	for _, ep := range a.GetAcks() {
		p := position{ep.GetRevision(), ep.GetIndex()}
		if b.cons.pending.Get(pendingKey(c.name, p)) == nil {
			continue
		}
		b.removeEntry(c, p)
	}
	for _, ep := range a.GetNaks() {
		p := position{ep.GetRevision(), ep.GetIndex()}
		v := b.cons.pending.Get(pendingKey(c.name, p))
		if v == nil {
			continue
		}
		e, err := decodePending(v)
		if err != nil {
			b.fail(err)
			return nil
		}
		if e.indexed {
			if err := b.cons.ready.Delete(readyKey(c.name, e.deadline, p)); err != nil {
				b.fail(fmt.Errorf("consumer %q: unindex %s: %w", c.name, p, err))
				return nil
			}
		}
		e.indexed, e.deadline = true, b.now
		b.putEntry(c, p, e)
	}
	b.settle(c)
	if b.err != nil {
		return nil
	}
	return &logpb.AckResponse{}
}

// Ack acknowledges or naks deliveries of a consumer, all or none.
func (b *Batch) Ack(a *logpb.AckRequest) (proto.Message, error) {
	if _, err := b.checkAck(a); err != nil {
		return nil, err
	}
	return nonNil(b.doAck(a), nil)
}
