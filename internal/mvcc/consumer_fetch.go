package mvcc

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Fetching: which events a fetch hands out (planFetch, the same on every member and in the
// server's read-only readiness check), and the command that records it (Batch.Fetch).

// planned is an event a fetch hands out, dead-letters, or holds back behind its key.
type planned struct {
	pos   position
	entry pendingEntry // its pending entry; zero for an event seen for the first time
	fresh bool         // seen for the first time
	ev    *logpb.Event
	size  int
}

// fetchPlan is what a fetch does.
type fetchPlan struct {
	deliver    []planned // in the order of the response: due pending events, then new ones
	deadLetter []planned
	wait       []planned // new events held back behind an earlier pending event of their key
	next       position
	// exhausted: the scan for new events stopped at its budget, not at the end or a limit.
	exhausted bool
	// wake is the earliest deadline after now of a pending delivery (0: none).
	wake int64
}

// planFetch plans a fetch of up to max events for consumer c (whose record is r) at time now;
// rev is the store revision. It only reads.
func planFetch(cb consumerBuckets, name string, r *logpb.ConsumerRecord, filter EventFilter, now int64, max int, rev int64) (*fetchPlan, error) {
	cfg := r.GetConfig()
	plan := &fetchPlan{next: nextOf(r)}
	ackPending, waiting, size := r.AckPending, r.Waiting, 0
	maxPending := int64(cfg.GetMaxAckPending())
	full := func() bool { return len(plan.deliver) >= max || size >= MaxFetchBytes }

	// Pending events that are due: deliveries past their deadline and waiting events that now
	// head their key, in deadline order.
	prefix := consPrefix(name)
	cur := cb.ready.Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		deadline, p, ok := splitReadyKey(k[len(prefix):])
		if !ok {
			return nil, errorCorrupt(fmt.Sprintf("ready key %x", k))
		}
		if deadline > now {
			plan.wake = deadline
			break
		}
		if full() && len(plan.deadLetter) >= max {
			break
		}
		e, err := decodePending(cb.pending.Get(pendingKey(name, p)))
		if err != nil {
			return nil, fmt.Errorf("consumer %q: ready event %s: %w", name, p, err)
		}
		if e.attempt >= cfg.GetMaxDeliver() {
			if len(plan.deadLetter) < max {
				ev, n, err := readEvent(cb.events, p)
				if err != nil {
					return nil, err
				}
				plan.deadLetter = append(plan.deadLetter, planned{pos: p, entry: e, ev: ev, size: n})
			}
			continue
		}
		if full() || (e.attempt == 0 && ackPending >= maxPending) {
			continue
		}
		ev, n, err := readEvent(cb.events, p)
		if err != nil {
			return nil, err
		}
		if e.attempt == 0 {
			ackPending++
		}
		size += n
		plan.deliver = append(plan.deliver, planned{pos: p, entry: e, ev: ev, size: n})
	}

	// New events, from next on.
	if full() || ackPending >= maxPending || waiting >= maxPending {
		return plan, nil
	}
	var busy map[string]bool // keys this plan hands out or holds back
	ec := cb.events.Cursor()
	scanned, end := 0, true
	for k, v := ec.Seek(plan.next.key()); k != nil; k, v = ec.Next() {
		if scanned == fetchScanBudget {
			plan.exhausted, end = true, false
			break
		}
		scanned++
		p, ok := splitPos(k)
		if !ok {
			return nil, errorCorrupt(fmt.Sprintf("event key %x", k))
		}
		topic, err := eventTopic(v)
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", p, err)
		}
		if !filter.Match(topic) {
			plan.next = p.after()
			continue
		}
		ev := &logpb.Event{}
		if err := proto.Unmarshal(v, ev); err != nil {
			return nil, errorCorrupt(fmt.Sprintf("event %s: %v", p, err))
		}
		if key := string(ev.Key); key != "" && (busy[key] || keyBusy(cb, name, ev.Key)) {
			if waiting >= maxPending {
				end = false
				break
			}
			waiting++
			plan.wait = append(plan.wait, planned{pos: p, fresh: true, ev: ev})
			plan.next = p.after()
			continue
		}
		if full() || ackPending >= maxPending {
			end = false
			break
		}
		ackPending++
		size += len(v)
		plan.deliver = append(plan.deliver, planned{pos: p, fresh: true, ev: ev, size: len(v)})
		if key := string(ev.Key); key != "" {
			if busy == nil {
				busy = map[string]bool{}
			}
			busy[key] = true
		}
		plan.next = p.after()
	}
	if end {
		// Every stored event was looked at: the next one will have a later revision.
		plan.next = maxPos(plan.next, position{rev + 1, 0})
	}
	return plan, nil
}

// keyBusy reports whether a consumer has a pending event of key.
func keyBusy(cb consumerBuckets, name string, key []byte) bool {
	prefix := keyQueuePrefix(name, key)
	k, _ := cb.keys.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+12
}

// readEvent reads the stored event at p.
func readEvent(events *bolt.Bucket, p position) (*logpb.Event, int, error) {
	v := events.Get(p.key())
	if v == nil {
		return nil, 0, errorCorrupt(fmt.Sprintf("pending event %s is not stored", p))
	}
	ev := &logpb.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return nil, 0, errorCorrupt(fmt.Sprintf("event %s: %v", p, err))
	}
	return ev, len(v), nil
}

// eventTopic reads the topic of a stored event without decoding the rest.
func eventTopic(v []byte) (string, error) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return "", errorCorrupt("event record")
		}
		v = v[n:]
		if num == 1 && typ == protowire.BytesType {
			s, m := protowire.ConsumeBytes(v)
			if m < 0 {
				return "", errorCorrupt("event topic")
			}
			return string(s), nil
		}
		m := protowire.ConsumeFieldValue(num, typ, v)
		if m < 0 {
			return "", errorCorrupt("event record")
		}
		v = v[m:]
	}
	return "", nil
}

// Fetch hands out up to max_events ready events of a consumer (0 means 1): due redeliveries
// first, then new events; each gets its next attempt and a deadline of the command's time plus
// the ack wait. Events due after their last attempt are dead-lettered instead.
func (b *Batch) Fetch(f *logpb.FetchRequest) (proto.Message, error) {
	c, err := b.loadConsumer(f.GetConsumer())
	if err != nil {
		return nil, err
	}
	b.skipLost(c)
	b.checkRetention(c)
	if b.err != nil {
		return nil, nil
	}
	max := max(int(f.GetMaxEvents()), 1)
	plan, err := planFetch(b.cons, c.name, c.rec, c.filter, b.now, max, b.st.rev)
	if err != nil {
		b.fail(err)
		return nil, nil
	}
	cfg := c.rec.Config
	dead := make([]*logpb.Event, 0, len(plan.deadLetter))
	for _, d := range plan.deadLetter {
		dead = append(dead, deadLetterOf(c.name, cfg.DeadLetterTopic, d))
	}
	if err := b.checkTopics(dead); err != nil {
		// The dead-letter topic cannot be created now: the events stay pending, due, and are
		// dead-lettered by a later fetch once a topic slot is free.
		b.s.log.Warn("consumer cannot dead-letter events", "consumer", c.name, "topic", cfg.DeadLetterTopic, "events", len(dead), "err", err)
		dead, plan.deadLetter = nil, nil
	}
	if len(dead) > 0 {
		b.publish(dead)
		for _, d := range plan.deadLetter {
			b.removeEntry(c, d.pos)
		}
		c.rec.DeadLettered += int64(len(dead))
		b.s.log.Warn("consumer dead-lettered events after their last attempt", "consumer", c.name, "topic", cfg.DeadLetterTopic,
			"events", len(dead), "first", plan.deadLetter[0].pos.String(), "index", b.index)
	}
	deadline := b.now + cfg.AckWaitMs*int64(time.Millisecond)
	resp := &logpb.FetchResponse{Deliveries: make([]*logpb.Delivery, 0, len(plan.deliver))}
	for _, d := range plan.deliver {
		e := d.entry
		switch {
		case d.fresh:
			e = pendingEntry{key: d.ev.Key}
			if len(e.key) > 0 {
				b.enqueueKey(c, d.pos, e.key)
			}
			c.rec.AckPending++
			c.rec.DeliveredRevision, c.rec.DeliveredIndex = d.pos.rev, d.pos.idx
		case e.attempt == 0:
			c.rec.Waiting--
			c.rec.AckPending++
		default:
			c.rec.Redelivered++
		}
		if e.indexed {
			if err := b.cons.ready.Delete(readyKey(c.name, e.deadline, d.pos)); err != nil {
				b.fail(fmt.Errorf("consumer %q: unindex %s: %w", c.name, d.pos, err))
				return nil, nil
			}
		}
		e.attempt++
		e.indexed, e.deadline = true, deadline
		b.putEntry(c, d.pos, e)
		resp.Deliveries = append(resp.Deliveries, &logpb.Delivery{Event: d.ev, Attempt: e.attempt, DeadlineUnixNano: deadline})
	}
	for _, w := range plan.wait {
		// It waits behind the event that made its key busy when the plan was made, unless
		// that one was dead-lettered above: then it heads its key, and is ready.
		e := pendingEntry{key: w.ev.Key}
		if !keyBusy(b.cons, c.name, w.ev.Key) {
			e.indexed = true
		}
		b.enqueueKey(c, w.pos, w.ev.Key)
		b.putEntry(c, w.pos, e)
		c.rec.Waiting++
	}
	if plan.next.less(nextOf(c.rec)) {
		b.fail(errorCorrupt(fmt.Sprintf("consumer %q: next would move back from %s to %s", c.name, nextOf(c.rec), plan.next)))
		return nil, nil
	}
	c.rec.NextRevision, c.rec.NextIndex = plan.next.rev, plan.next.idx
	b.settle(c)
	if b.err != nil {
		return nil, nil
	}
	return resp, nil
}

func (b *Batch) enqueueKey(c *consumer, p position, key []byte) {
	if err := b.cons.keys.Put(keyQueueKey(c.name, key, p), []byte{}); err != nil {
		b.fail(fmt.Errorf("consumer %q: enqueue %s: %w", c.name, p, err))
	}
}

// deadLetterOf is the dead-letter event of a pending event after its last attempt: the original
// key, payload and headers, and headers naming the consumer and the original event.
func deadLetterOf(consumer, topic string, d planned) *logpb.Event {
	h := make(map[string]string, len(d.ev.Headers)+5)
	for k, v := range d.ev.Headers {
		h[k] = v
	}
	h[HeaderDeadLetterConsumer] = consumer
	h[HeaderOriginalTopic] = d.ev.Topic
	h[HeaderOriginalID] = d.ev.Id
	h[HeaderOriginalPosition] = d.pos.String()
	h[HeaderAttempts] = strconv.Itoa(int(d.entry.attempt))
	return &logpb.Event{Topic: topic, Key: d.ev.Key, Payload: d.ev.Payload, Headers: h}
}
