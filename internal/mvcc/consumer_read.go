package mvcc

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/internal/logpb"
)

// Reading consumers: their state and lag, for ConsumerInfo and ConsumerList, and whether a fetch
// would find something, for the server's long poll (which proposes a fetch only then).

// lagScanBudget bounds the events a lag count examines; past it the lag counts the events of
// every topic after the position reached (an upper bound).
const lagScanBudget = 100_000

// consumerState reports a consumer's state at time now (unix nanoseconds).
func consumerState(cb consumerBuckets, st state, r *logpb.ConsumerRecord, now int64) (*logpb.ConsumerState, error) {
	out := &logpb.ConsumerState{
		Config: r.Config, CreatedRevision: r.CreatedRevision, AckFloor: r.AckFloorRevision,
		DeliveredRevision: r.DeliveredRevision, DeliveredIndex: r.DeliveredIndex,
		Pending: r.AckPending, Redelivered: r.Redelivered, DeadLettered: r.DeadLettered,
		Stalled: r.Stalled, StalledReason: r.StalledReason + lossNote(r),
	}
	name := r.GetConfig().GetName()
	filter, err := NewEventFilter(r.GetConfig().GetTopics())
	if err != nil {
		return nil, errorCorrupt(fmt.Sprintf("consumer %q topics: %v", name, err))
	}
	lag := r.AckPending + r.Waiting
	var oldest int64 // time of the oldest unacknowledged event, 0 if none known
	prefix := consPrefix(name)
	if k, _ := cb.pending.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		if p, ok := splitPos(k[len(prefix):]); ok {
			if ev, _, err := readEvent(cb.events, p); err == nil {
				oldest = ev.TimeUnixNano
			}
		}
	}
	next := maxPos(nextOf(r), position{st.evFloor, 0})
	c := cb.events.Cursor()
	scanned := 0
	for k, v := c.Seek(next.key()); k != nil; k, v = c.Next() {
		p, ok := splitPos(k)
		if !ok {
			return nil, errorCorrupt(fmt.Sprintf("event key %x", k))
		}
		if scanned == lagScanBudget {
			_, before := publishedBefore(cb, st, p.rev)
			lag += st.evCount - before
			break
		}
		scanned++
		topic, err := eventTopic(v)
		if err != nil {
			return nil, err
		}
		if !filter.Match(topic) {
			continue
		}
		lag++
		if oldest == 0 {
			if ev, _, err := readEvent(cb.events, p); err == nil {
				oldest = ev.TimeUnixNano
			}
		}
	}
	out.LagEvents = lag
	if oldest != 0 && now > oldest {
		out.LagSeconds = int64(time.Duration(now-oldest) / time.Second)
	}
	return out, nil
}

// Consumer returns a consumer's state, its lag measured at now.
func (s *Store) Consumer(name string, now time.Time) (*logpb.ConsumerState, error) {
	var out *logpb.ConsumerState
	err := s.view(func(tx *bolt.Tx) error {
		cb := openConsumerBuckets(tx)
		r, err := loadRecord(cb.rec, name)
		if err != nil {
			return err
		}
		if r == nil {
			return errorf(ErrConsumerNotFound, "%q", name)
		}
		out, err = consumerState(cb, loadState(tx), r, now.UnixNano())
		return err
	})
	return out, err
}

// Consumers returns every consumer's state in name order, their lag measured at now.
func (s *Store) Consumers(now time.Time) ([]*logpb.ConsumerState, error) {
	var out []*logpb.ConsumerState
	err := s.view(func(tx *bolt.Tx) error {
		cb := openConsumerBuckets(tx)
		st := loadState(tx)
		return cb.rec.ForEach(func(k, _ []byte) error {
			r, err := loadRecord(cb.rec, string(k))
			if err != nil {
				return err
			}
			cs, err := consumerState(cb, st, r, now.UnixNano())
			if err != nil {
				return err
			}
			out = append(out, cs)
			return nil
		})
	})
	return out, err
}

// FetchReady reports whether a fetch of consumer name at time now would hand out or
// dead-letter an event, or has a long way to go through events of other topics, as of the
// committed state. wake is the earliest deadline after now of its pending deliveries, when one
// was seen (0 otherwise): a fetch may find something then without any commit.
func (s *Store) FetchReady(name string, now time.Time) (ready bool, wake int64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		cb := openConsumerBuckets(tx)
		st := loadState(tx)
		r, err := loadRecord(cb.rec, name)
		if err != nil {
			return err
		}
		if r == nil {
			return errorf(ErrConsumerNotFound, "%q", name)
		}
		if r.Stalled && r.AckFloorRevision < st.evFloor {
			ready = true // its lost events are to be skipped
			return nil
		}
		filter, err := NewEventFilter(r.GetConfig().GetTopics())
		if err != nil {
			return errorCorrupt(fmt.Sprintf("consumer %q topics: %v", name, err))
		}
		plan, err := planFetch(cb, name, r, filter, now.UnixNano(), 1, st.rev)
		if err != nil {
			return err
		}
		ready = len(plan.deliver) > 0 || len(plan.deadLetter) > 0 || plan.exhausted
		wake = plan.wake
		return nil
	})
	return ready, wake, err
}

// ConsumersChanged returns a channel closed once a commit changed some consumer after the call
// (a delivery acknowledged, a key freed, a consumer created or deleted). Fetches that wait wake
// on it and on RevChanged (new events).
func (s *Store) ConsumersChanged() <-chan struct{} { return s.cons.wait() }

// PendingDelivery is one of a consumer's pending events as the store keeps it.
type PendingDelivery struct {
	Revision int64
	Index    int32
	// Attempt is the latest delivery's attempt; 0 while the event waits behind an earlier
	// pending event of its key.
	Attempt int32
	// Deadline is when the latest delivery is due again (unix nanoseconds); 0 for a waiting
	// event that heads its key.
	Deadline int64
	Key      []byte
}

// ConsumerProgress returns a consumer's stored record and its pending events in position
// order, as of the committed state: what the replicated state holds of it, for checkers (the
// simulator compares it across members) and diagnostics. It changes nothing.
func (s *Store) ConsumerProgress(name string) (*logpb.ConsumerRecord, []PendingDelivery, error) {
	var rec *logpb.ConsumerRecord
	var pending []PendingDelivery
	err := s.view(func(tx *bolt.Tx) error {
		cb := openConsumerBuckets(tx)
		r, err := loadRecord(cb.rec, name)
		if err != nil {
			return err
		}
		if r == nil {
			return errorf(ErrConsumerNotFound, "%q", name)
		}
		rec = r
		prefix := consPrefix(name)
		c := cb.pending.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			p, ok := splitPos(k[len(prefix):])
			if !ok {
				return errorCorrupt(fmt.Sprintf("pending key %x", k))
			}
			e, err := decodePending(v)
			if err != nil {
				return fmt.Errorf("consumer %q: pending event %s: %w", name, p, err)
			}
			pending = append(pending, PendingDelivery{Revision: p.rev, Index: p.idx, Attempt: e.attempt, Deadline: e.deadline, Key: e.key})
		}
		return nil
	})
	return rec, pending, err
}
