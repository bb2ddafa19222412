package mvcc

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Events: the transactional outbox. A write (put, range delete, transaction branch, or a publish
// alone) may carry events; they are stored by the same command, in the same bbolt transaction,
// as the key versions it writes, so the data change and its events exist together or not at all,
// on every member, across crashes. A command that publishes takes a revision even if it changes
// no key, and its events are numbered 0, 1, ... within it: (revision, index) is the event's
// position in one gap-free, totally ordered stream.
//
// Layout:
//
//	events  rev index -> logpb.Event (revision, index, time and id filled in)
//	topics  topic     -> retained events (uint64), last revision (uint64)
//	evsize  rev       -> bytes and events published before rev, and through rev (4 x uint64)
//
// The topics bucket bounds the topics alive at once (Limits.MaxTopics): a topic counts while it
// holds a retained event; compaction that removes its last event frees its slot. The evsize
// bucket lets consumer retention measure the bytes of any range of revisions without reading
// the events (consumer_retention.go).
//
// Events are retained from the events floor (meta events_floor) on: the compacted revision + 1,
// lowered to the ack floor of every consumer that holds events (consumer_retention.go), so that
// key compaction never removes an event a consumer has not acknowledged.

var (
	bucketEvents = []byte("events")
	bucketTopics = []byte("topics")
	bucketEvSize = []byte("evsize")
	// metaTopics counts the entries of the topics bucket.
	metaTopics = []byte("topics")
	// metaEventsFloor is the oldest revision whose events are retained; metaEventBytes and
	// metaEventCount count what was ever published.
	metaEventsFloor = []byte("events_floor")
	metaEventBytes  = []byte("event_bytes")
	metaEventCount  = []byte("event_count")
)

// eventKey is the events bucket key of an event: rev index, big endian (revision order).
func eventKey(rev int64, index int32) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, uint64(rev))
	binary.BigEndian.PutUint32(k[8:], uint32(index))
	return k
}

// splitEventKey decodes an events bucket key; ok is false if it is not one.
func splitEventKey(k []byte) (rev int64, index int32, ok bool) {
	if len(k) != 12 {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k)), int32(binary.BigEndian.Uint32(k[8:])), true
}

// EventID returns the id the store gives an event published without one.
func EventID(rev int64, index int32) string {
	return strconv.FormatInt(rev, 16) + "-" + strconv.FormatInt(int64(index), 16)
}

// CheckTopic reports whether topic is a valid topic name: 1 to MaxTopicBytes bytes of ASCII
// letters, digits and "._-/:", not starting with a dot. ("*" is reserved for patterns.)
func CheckTopic(topic string) error {
	if topic == "" {
		return errorf(ErrInvalidTopic, "empty topic")
	}
	if len(topic) > MaxTopicBytes {
		return errorf(ErrInvalidTopic, "topic is %d bytes, limit %d", len(topic), MaxTopicBytes)
	}
	if topic[0] == '.' {
		return errorf(ErrInvalidTopic, "topic %q starts with a dot", topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' {
			continue
		}
		return errorf(ErrInvalidTopic, "topic %q has byte %q at %d (letters, digits and \"._-/:\" only)", topic, c, i)
	}
	return nil
}

// validateEvents checks the events of one write against the limits; n is how many events the
// write publishes in all (a transaction branch may hold several lists).
func (l Limits) validateEvents(evs []*logpb.Event) error {
	for i, e := range evs {
		if err := CheckTopic(e.GetTopic()); err != nil {
			// An *Error, never a wrapped one: it may be stored as a session's result.
			return errorf(ErrInvalidTopic, "event %d: %s", i, strings.TrimPrefix(err.Error(), "mvcc: "+ErrInvalidTopic.Message+": "))
		}
		if e.GetRevision() != 0 || e.GetIndex() != 0 || e.GetTimeUnixNano() != 0 {
			return errorf(ErrInvalidArgument, "event %d: revision, index and time are set by the store", i)
		}
		if n := proto.Size(e); n > l.MaxEventBytes {
			return errorf(ErrEventTooLarge, "event %d (topic %q) is %d bytes, limit %d", i, e.GetTopic(), n, l.MaxEventBytes)
		}
	}
	return nil
}

// checkEventCount enforces MaxEventsPerWrite on the events one write may publish.
func (l Limits) checkEventCount(n int) error {
	if n > l.MaxEventsPerWrite {
		return errorf(ErrTooManyEvents, "%d events in one write, limit %d", n, l.MaxEventsPerWrite)
	}
	return nil
}

// branchEvents returns the events a transaction branch publishes, in op order.
func branchEvents(ops []*logpb.RequestOp) []*logpb.Event {
	var evs []*logpb.Event
	for _, op := range ops {
		switch r := op.GetRequest().(type) {
		case *logpb.RequestOp_RequestPut:
			evs = append(evs, r.RequestPut.GetEvents()...)
		case *logpb.RequestOp_RequestDeleteRange:
			evs = append(evs, r.RequestDeleteRange.GetEvents()...)
		case *logpb.RequestOp_RequestPublish:
			evs = append(evs, r.RequestPublish.GetEvents()...)
		}
	}
	return evs
}

// checkTopics refuses events that would make more than MaxTopics topics hold retained events.
// It runs before the command's first write.
func (b *Batch) checkTopics(evs []*logpb.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var added map[string]bool
	for _, e := range evs {
		t := e.GetTopic()
		if added[t] || b.topics.Get([]byte(t)) != nil {
			continue
		}
		if added == nil {
			added = map[string]bool{}
		}
		added[t] = true
		if b.st.topics+int64(len(added)) > int64(b.limits.MaxTopics) {
			return errorf(ErrTooManyTopics, "topic %q would be topic %d, limit %d (topics count while they hold retained events)",
				t, b.st.topics+int64(len(added)), b.limits.MaxTopics)
		}
	}
	return nil
}

// publish stores events at the command's revision, after the ones it already published, and
// returns their ids. checkTopics must have accepted them.
func (b *Batch) publish(evs []*logpb.Event) []string {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(evs))
	for _, stored := range evs {
		// The store's fields are set on the request's own event for encoding, and put back
		// after: cheaper than a copy, and the command stays as it came (it may be applied again).
		id := stored.Id
		stored.Revision, stored.Index, stored.TimeUnixNano = b.pendRev, b.evIndex, b.now
		if stored.Id == "" {
			stored.Id = EventID(b.pendRev, b.evIndex)
		}
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(stored)
		newID := stored.Id
		stored.Revision, stored.Index, stored.TimeUnixNano, stored.Id = 0, 0, 0, id
		if err != nil {
			b.fail(fmt.Errorf("encode event %d.%d: %w", b.pendRev, b.evIndex, err))
			return nil
		}
		if err := b.events.Put(eventKey(b.pendRev, b.evIndex), v); err != nil {
			b.fail(fmt.Errorf("store event %d.%d: %w", b.pendRev, b.evIndex, err))
			return nil
		}
		if err := b.countTopic(stored.Topic, 1); err != nil {
			b.fail(err)
			return nil
		}
		if b.evIndex == 0 {
			b.evBefore = [2]int64{b.st.evBytes, b.st.evCount}
		}
		b.st.evBytes += int64(len(v))
		b.st.evCount++
		ids = append(ids, newID)
		if b.track {
			b.touchedTopics = append(b.touchedTopics, stored.Topic)
		}
		b.evIndex++
	}
	b.wrote = true
	if err := b.recordEventSizes(); err != nil {
		b.fail(err)
		return nil
	}
	return ids
}

// countTopic adds delta to a topic's retained events, creating or removing its entry.
func (b *Batch) countTopic(topic string, delta int64) error {
	k := []byte(topic)
	var n, last uint64
	if v := b.topics.Get(k); len(v) == 16 {
		n, last = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	} else if v != nil {
		return errorCorrupt(fmt.Sprintf("topic %q entry of %d bytes", topic, len(v)))
	} else {
		b.st.topics++
	}
	n = uint64(int64(n) + delta)
	if delta > 0 {
		last = uint64(b.pendRev)
	}
	if n == 0 {
		b.st.topics--
		if err := b.topics.Delete(k); err != nil {
			return fmt.Errorf("remove topic %q: %w", topic, err)
		}
		return nil
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), n)
	v = binary.BigEndian.AppendUint64(v, last)
	if err := b.topics.Put(k, v); err != nil {
		return fmt.Errorf("count topic %q: %w", topic, err)
	}
	return nil
}

// Publish publishes events without changing a key.
func (b *Batch) Publish(p *logpb.PublishRequest) (proto.Message, error) {
	if err := b.checkTopics(p.GetEvents()); err != nil {
		return nil, err
	}
	ids := b.publish(p.GetEvents())
	if b.err != nil {
		return nil, nil
	}
	return &logpb.PublishResponse{EventIds: ids}, nil
}

// compactEvents removes up to budget events below rev, in revision order, and reports whether
// it reached rev.
func (b *Batch) compactEvents(rev int64, budget int) (done bool, err error) {
	var todo []goneEvent
	c := b.events.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, _, ok := splitEventKey(k)
		if !ok {
			return false, errorCorrupt(fmt.Sprintf("event key %x", k))
		}
		if r >= rev {
			break
		}
		if len(todo) == budget {
			return false, b.removeEvents(todo, r)
		}
		var e logpb.Event
		if err := proto.Unmarshal(v, &e); err != nil {
			return false, errorCorrupt(fmt.Sprintf("event %x: %v", k, err))
		}
		todo = append(todo, goneEvent{key: append([]byte(nil), k...), topic: e.Topic})
	}
	return true, b.removeEvents(todo, rev)
}

// goneEvent is an event compaction removes.
type goneEvent struct {
	key   []byte
	topic string
}

// removeEvents removes the events of todo, and the evsize entries below rev that only they needed.
func (b *Batch) removeEvents(todo []goneEvent, rev int64) error {
	if len(todo) > 0 {
		if err := b.pruneEventSizes(rev); err != nil {
			return err
		}
	}
	for _, g := range todo {
		if err := b.events.Delete(g.key); err != nil {
			return fmt.Errorf("compact event %x: %w", g.key, err)
		}
		if err := b.countTopic(g.topic, -1); err != nil {
			return err
		}
	}
	return nil
}

// EventFilter selects events by topic: exact names, prefixes ("orders.*") or every topic ("*").
type EventFilter struct {
	exact    map[string]bool
	prefixes []string
	all      bool
}

// NewEventFilter parses topic patterns.
func NewEventFilter(patterns []string) (EventFilter, error) {
	f := EventFilter{}
	for _, p := range patterns {
		switch {
		case p == "*":
			f.all = true
		case len(p) > 1 && p[len(p)-1] == '*':
			if err := CheckTopic(p[:len(p)-1]); err != nil {
				return EventFilter{}, fmt.Errorf("topic pattern %q: %w", p, err)
			}
			f.prefixes = append(f.prefixes, p[:len(p)-1])
		default:
			if err := CheckTopic(p); err != nil {
				return EventFilter{}, fmt.Errorf("topic pattern %q: %w", p, err)
			}
			if f.exact == nil {
				f.exact = map[string]bool{}
			}
			f.exact[p] = true
		}
	}
	return f, nil
}

// Empty reports whether the filter selects no event.
func (f EventFilter) Empty() bool { return !f.all && len(f.exact) == 0 && len(f.prefixes) == 0 }

// Match reports whether the filter selects topic.
func (f EventFilter) Match(topic string) bool {
	if f.all || f.exact[topic] {
		return true
	}
	for _, p := range f.prefixes {
		if len(topic) >= len(p) && topic[:len(p)] == p {
			return true
		}
	}
	return false
}

// Events returns the stored events at positions >= (fromRev, fromIndex) that match f, in stream
// order: at least max of them when there are that many, never splitting a revision. It also
// returns the store revision it read at: no event at or below it is missing from the result
// unless max cut it. Events below the events floor, the oldest retained revision, are gone
// (ErrCompacted); the floor may be below the key history's compacted revision while a durable
// consumer holds events.
func (s *Store) Events(fromRev int64, fromIndex int32, max int, f EventFilter) ([]*logpb.Event, int64, error) {
	var out []*logpb.Event
	var cur int64
	err := s.view(func(tx *bolt.Tx) error {
		st := loadState(tx)
		cur = st.rev
		if fromRev < st.evFloor {
			return errorf(ErrCompacted, "events from revision %d, compacted below %d", fromRev, st.evFloor)
		}
		c := tx.Bucket(bucketEvents).Cursor()
		var last int64
		for k, v := c.Seek(eventKey(fromRev, fromIndex)); k != nil; k, v = c.Next() {
			rev, _, ok := splitEventKey(k)
			if !ok {
				return errorCorrupt(fmt.Sprintf("event key %x", k))
			}
			if len(out) >= max && rev != last {
				break
			}
			last = rev
			e := &logpb.Event{}
			if err := proto.Unmarshal(v, e); err != nil {
				return errorCorrupt(fmt.Sprintf("event %x: %v", k, err))
			}
			if f.Match(e.Topic) {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, cur, nil
}

// Topic is a topic holding retained events.
type Topic struct {
	Name string
	// Events counts its retained events; LastRevision is the revision of its newest event.
	Events       int64
	LastRevision int64
}

// Topics lists the topics holding retained events, in name order.
func (s *Store) Topics() ([]Topic, error) {
	var out []Topic
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTopics).ForEach(func(k, v []byte) error {
			if len(v) != 16 {
				return errorCorrupt(fmt.Sprintf("topic %q entry of %d bytes", k, len(v)))
			}
			out = append(out, Topic{Name: string(k), Events: int64(binary.BigEndian.Uint64(v)), LastRevision: int64(binary.BigEndian.Uint64(v[8:]))})
			return nil
		})
	})
	return out, err
}
