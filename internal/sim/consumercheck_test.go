package sim

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// consumerHarness is a consumer checker outside a run, over an event harness whose stream holds
// four events: 2.0 and 2.1 (topic orders, key k0), 3.0 (topic audit.log, key k0) and 4.0
// (orders, k0).
type consumerHarness struct {
	*eventHarness
	cc      *consumerCheck
	orders  *simConsumer
	ev      []*logpb.Event
	ordered []*logpb.Event // the events of topic orders
}

func newConsumerHarness(t *testing.T) *consumerHarness {
	h := newEventHarness()
	h.r.cons = newConsumerCheck(h.r, h.c,
		&logpb.ConsumerConfig{Name: "orders-c", Topics: []string{"orders"}, StartRevision: 1, MaxDeliver: 2},
		&logpb.ConsumerConfig{Name: "pattern-c", Topics: []string{"audit.*"}, StartRevision: 1, MaxDeliver: 2})
	ch := &consumerHarness{eventHarness: h, cc: h.r.cons, orders: h.r.cons.byName["orders-c"]}
	put, audit, last := h.op(1, 4, "put", [2]int{2, 0}), h.op(2, 5, "publish", [2]int{1, 0}), h.op(3, 6, "put", [2]int{1, 0})
	audit.branches[0][0].Topic = "audit.log"
	if v := h.run(func() {
		for _, e := range []*logpb.Event{stored(put, 0, 0, 2, 0), stored(put, 0, 1, 2, 1), stored(audit, 0, 0, 3, 0), stored(last, 0, 0, 4, 0)} {
			h.c.append(1, 7, e)
			ch.ev = append(ch.ev, e)
		}
	}); v != nil {
		t.Fatalf("building the stream: %v", v)
	}
	ch.ordered = []*logpb.Event{ch.ev[0], ch.ev[1], ch.ev[3]}
	return ch
}

func rec(floor, next evPos) *logpb.ConsumerRecord {
	return &logpb.ConsumerRecord{Config: &logpb.ConsumerConfig{Name: "orders-c"}, AckFloorRevision: floor.rev, AckFloorIndex: floor.idx,
		NextRevision: next.rev, NextIndex: next.idx}
}

func pend(e *logpb.Event, attempt int32) mvcc.PendingDelivery {
	return mvcc.PendingDelivery{Revision: e.Revision, Index: e.Index, Attempt: attempt, Key: e.Key}
}

func delivery(e *logpb.Event, attempt int32) *logpb.Delivery {
	return &logpb.Delivery{Event: proto.CloneOf(e), Attempt: attempt}
}

func ackOf(e *logpb.Event, attempt int32) *logpb.EventPosition {
	return &logpb.EventPosition{Revision: e.Revision, Index: e.Index, Attempt: attempt}
}

// TestConsumerCheckerCatches feeds the consumer checker states and answers broken in each way
// it names, and a sound history, to show every check can fail.
func TestConsumerCheckerCatches(t *testing.T) {
	cases := []struct {
		name string
		want Kind // "" for none
		f    func(h *consumerHarness)
	}{
		{"sound", "", func(h *consumerHarness) {
			o, e := h.orders, h.ordered
			h.cc.state(1, 8, o, rec(evPos{2, 0}, evPos{2, 2}), []mvcc.PendingDelivery{pend(e[0], 1), pend(e[1], 0)})
			h.cc.fetched(1, o, 8, []*logpb.Delivery{delivery(e[0], 1)})
			h.cc.ackApplied(&logpb.AckRequest{Consumer: o.name, Acks: []*logpb.EventPosition{ackOf(e[0], 1)}})
			h.cc.ackedOK(1, o, 9, []*logpb.EventPosition{ackOf(e[0], 1)})
			h.cc.state(2, 9, o, rec(evPos{2, 1}, evPos{2, 2}), []mvcc.PendingDelivery{pend(e[1], 0)})
			h.cc.fetched(1, o, 10, []*logpb.Delivery{delivery(e[1], 1)})
			h.cc.state(1, 10, o, rec(evPos{2, 1}, evPos{4, 1}), []mvcc.PendingDelivery{pend(e[1], 1), pend(e[2], 0)})
			h.cc.compare(1, 10, digestConsumer(h.r, rec(evPos{2, 1}, evPos{4, 1}), nil))
			h.cc.compare(2, 10, digestConsumer(h.r, rec(evPos{2, 1}, evPos{4, 1}), nil))
			h.cc.final(o, rec(evPos{2, 1}, evPos{4, 1}), []mvcc.PendingDelivery{pend(e[1], 1), pend(e[2], 0)})
		}},
		{"position back", ConsumerPosition, func(h *consumerHarness) {
			h.cc.state(1, 10, h.orders, rec(evPos{2, 1}, evPos{3, 0}), nil)
			h.cc.state(2, 12, h.orders, rec(evPos{2, 0}, evPos{3, 0}), nil)
		}},
		{"position back, seen out of order", ConsumerPosition, func(h *consumerHarness) {
			h.cc.state(1, 12, h.orders, rec(evPos{2, 0}, evPos{2, 1}), nil)
			h.cc.state(2, 10, h.orders, rec(evPos{2, 0}, evPos{3, 0}), nil)
		}},
		{"consumer vanished", ConsumerPosition, func(h *consumerHarness) {
			h.cc.state(1, 10, h.orders, rec(evPos{2, 0}, evPos{2, 0}), nil)
			h.cc.state(1, 11, h.orders, nil, nil)
		}},
		{"members disagree", ConsumerState, func(h *consumerHarness) {
			h.cc.compare(1, 10, digestConsumer(h.r, rec(evPos{2, 0}, evPos{2, 1}), []mvcc.PendingDelivery{pend(h.ordered[0], 1)}))
			h.cc.compare(2, 10, digestConsumer(h.r, rec(evPos{2, 0}, evPos{2, 1}), []mvcc.PendingDelivery{pend(h.ordered[0], 2)}))
		}},
		{"pending outside floor and next", ConsumerState, func(h *consumerHarness) {
			h.cc.state(1, 10, h.orders, rec(evPos{2, 1}, evPos{3, 0}), []mvcc.PendingDelivery{pend(h.ordered[0], 1)})
		}},
		{"acked, delivered again", ConsumerRedelivered, func(h *consumerHarness) {
			h.cc.ackedOK(1, h.orders, 9, []*logpb.EventPosition{ackOf(h.ordered[0], 1)})
			h.cc.fetched(2, h.orders, 12, []*logpb.Delivery{delivery(h.ordered[0], 2)})
		}},
		{"acked, answered after the redelivery", ConsumerRedelivered, func(h *consumerHarness) {
			h.cc.fetched(2, h.orders, 12, []*logpb.Delivery{delivery(h.ordered[0], 2)})
			h.cc.ackedOK(1, h.orders, 9, []*logpb.EventPosition{ackOf(h.ordered[0], 1)})
		}},
		{"acked, pending again", ConsumerRedelivered, func(h *consumerHarness) {
			h.cc.ackedOK(1, h.orders, 9, []*logpb.EventPosition{ackOf(h.ordered[0], 1)})
			h.cc.state(2, 11, h.orders, rec(evPos{2, 0}, evPos{2, 1}), []mvcc.PendingDelivery{pend(h.ordered[0], 2)})
		}},
		{"acked, dead-lettered", ConsumerRedelivered, func(h *consumerHarness) {
			e := h.ordered[0]
			h.cc.ackedOK(1, h.orders, 9, []*logpb.EventPosition{ackOf(e, 1)})
			h.c.appendDeadLetter(1, &logpb.Event{Topic: "orders-c.dead-letter", Revision: 5, Index: 0, Id: mvcc.EventID(5, 0), Key: e.Key, Payload: e.Payload,
				Headers: map[string]string{mvcc.HeaderDeadLetterConsumer: "orders-c", mvcc.HeaderOriginalTopic: e.Topic, mvcc.HeaderOriginalID: e.Id,
					mvcc.HeaderOriginalPosition: "2.0", mvcc.HeaderAttempts: "2"}})
		}},
		{"dead letter of nothing published", ConsumerDelivery, func(h *consumerHarness) {
			e := h.ordered[0]
			h.c.appendDeadLetter(1, &logpb.Event{Topic: "orders-c.dead-letter", Revision: 5, Index: 0, Id: mvcc.EventID(5, 0), Key: e.Key, Payload: []byte("other"),
				Headers: map[string]string{mvcc.HeaderDeadLetterConsumer: "orders-c", mvcc.HeaderOriginalTopic: e.Topic, mvcc.HeaderOriginalID: e.Id,
					mvcc.HeaderOriginalPosition: "2.0", mvcc.HeaderAttempts: "2"}})
		}},
		{"two of a key out in one state", ConsumerKeyOrder, func(h *consumerHarness) {
			h.cc.state(1, 10, h.orders, rec(evPos{2, 0}, evPos{2, 2}), []mvcc.PendingDelivery{pend(h.ordered[0], 1), pend(h.ordered[1], 1)})
		}},
		{"delivered while the key's predecessor was pending", ConsumerKeyOrder, func(h *consumerHarness) {
			h.cc.state(1, 9, h.orders, rec(evPos{2, 0}, evPos{2, 1}), []mvcc.PendingDelivery{pend(h.ordered[0], 1)})
			h.cc.fetched(2, h.orders, 8, []*logpb.Delivery{delivery(h.ordered[1], 1)})
		}},
		{"predecessor pending seen after the delivery", ConsumerKeyOrder, func(h *consumerHarness) {
			h.cc.fetched(2, h.orders, 8, []*logpb.Delivery{delivery(h.ordered[1], 1)})
			h.cc.state(1, 9, h.orders, rec(evPos{2, 0}, evPos{2, 1}), []mvcc.PendingDelivery{pend(h.ordered[0], 1)})
		}},
		{"not selected", ConsumerDelivery, func(h *consumerHarness) {
			h.cc.fetched(1, h.orders, 8, []*logpb.Delivery{delivery(h.ev[2], 1)})
		}},
		{"not as published", ConsumerDelivery, func(h *consumerHarness) {
			d := delivery(h.ordered[0], 1)
			d.Event.Payload = []byte("forged")
			h.cc.fetched(1, h.orders, 8, []*logpb.Delivery{d})
		}},
		{"not in the stream", ConsumerDelivery, func(h *consumerHarness) {
			d := delivery(h.ordered[0], 1)
			d.Event.Revision, d.Event.Index = 9, 0
			h.cc.fetched(1, h.orders, 8, []*logpb.Delivery{d})
			h.cc.final(h.orders, nil, nil)
		}},
		{"pending event not selected", ConsumerDelivery, func(h *consumerHarness) {
			h.cc.state(1, 10, h.orders, rec(evPos{3, 0}, evPos{3, 1}), []mvcc.PendingDelivery{pend(h.ev[2], 1)})
		}},
		{"skipped", ConsumerSkipped, func(h *consumerHarness) {
			e := h.ordered
			h.cc.ackApplied(&logpb.AckRequest{Consumer: "orders-c", Acks: []*logpb.EventPosition{ackOf(e[0], 1)}})
			h.cc.final(h.orders, rec(evPos{4, 1}, evPos{4, 1}), nil)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newConsumerHarness(t)
			v := h.run(func() { c.f(h) })
			switch {
			case c.want == "" && v != nil:
				t.Fatalf("sound history reported: %v", v)
			case c.want != "" && (v == nil || v.Kind != c.want):
				t.Fatalf("want a %s violation, got %v", c.want, v)
			case v != nil:
				t.Logf("%s: %s", v.Kind, v.Detail)
			}
		})
	}
}
