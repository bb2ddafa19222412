package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

func consumerCmd(cfg *logpb.ConsumerConfig) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_ConsumerCreate{ConsumerCreate: &logpb.ConsumerCreateRequest{Config: cfg}}}
}

func fetchCmd(name string, max int) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Fetch{Fetch: &logpb.FetchRequest{Consumer: name, MaxEvents: int32(max)}}}
}

func posOfDelivery(d *logpb.Delivery) *logpb.EventPosition {
	return &logpb.EventPosition{Revision: d.Event.Revision, Index: d.Event.Index, Attempt: d.Attempt}
}

func ackReq(name string, acks, naks []*logpb.Delivery) *logpb.AckRequest {
	a := &logpb.AckRequest{Consumer: name}
	for _, d := range acks {
		a.Acks = append(a.Acks, posOfDelivery(d))
	}
	for _, d := range naks {
		a.Naks = append(a.Naks, posOfDelivery(d))
	}
	return a
}

func ackCmd(name string, ds ...*logpb.Delivery) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Ack{Ack: ackReq(name, ds, nil)}}
}

func nakCmd(name string, ds ...*logpb.Delivery) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Ack{Ack: ackReq(name, nil, ds)}}
}

func (h *harness) fetch(name string, max int) []*logpb.Delivery {
	h.t.Helper()
	return h.ok(fetchCmd(name, max)).(*logpb.FetchResponse).Deliveries
}

func (h *harness) publish(evs ...*logpb.Event) int64 {
	h.t.Helper()
	return h.ok(cmdOf(&logpb.PublishRequest{Events: evs})).(*logpb.PublishResponse).Header.Revision
}

func (h *harness) consumer(name string) *logpb.ConsumerState {
	h.t.Helper()
	cs, err := h.s.Consumer(name, h.now)
	if err != nil {
		h.t.Fatalf("Consumer(%q): %v", name, err)
	}
	return cs
}

// payloads renders deliveries as "payload@attempt".
func payloads(ds []*logpb.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s@%d", d.Event.Payload, d.Attempt))
	}
	return out
}

func wantPayloads(t testing.TB, got []*logpb.Delivery, want ...string) {
	t.Helper()
	if p := payloads(got); !slices.Equal(p, want) {
		t.Fatalf("delivered %q, want %q", p, want)
	}
}

// checkConsumerInvariants verifies that a consumer's counters and indexes agree with its
// pending entries: ack_pending counts the delivered ones, waiting the others; every delivered
// entry and every waiting head is in the ready index at its deadline and nothing else is; the
// key queues hold exactly the keyed entries; the ack floor is min(first pending, next); the
// retention index holds exactly the consumers that are not stalled, at their ack floors.
func checkConsumerInvariants(t testing.TB, s *Store) {
	t.Helper()
	err := s.view(func(tx *bolt.Tx) error {
		cb := openConsumerBuckets(tx)
		st := loadState(tx)
		n := 0
		floors := 0
		err := cb.rec.ForEach(func(k, _ []byte) error {
			n++
			name := string(k)
			r, err := loadRecord(cb.rec, name)
			if err != nil {
				return err
			}
			prefix := consPrefix(name)
			var delivered, waiting int64
			var first *position
			queues := map[string][]position{}
			ready := 0
			c := cb.pending.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				p, _ := splitPos(k[len(prefix):])
				if first == nil {
					first = &p
				}
				e, err := decodePending(v)
				if err != nil {
					return err
				}
				if e.attempt > 0 {
					delivered++
				} else {
					waiting++
				}
				if len(e.key) > 0 {
					queues[string(e.key)] = append(queues[string(e.key)], p)
				}
				if e.indexed {
					ready++
					if cb.ready.Get(readyKey(name, e.deadline, p)) == nil {
						t.Errorf("consumer %q: %s indexed at %d but not in the ready index", name, p, e.deadline)
					}
				} else if e.attempt > 0 {
					t.Errorf("consumer %q: delivered %s is not in the ready index", name, p)
				}
			}
			if delivered != r.AckPending || waiting != r.Waiting {
				t.Errorf("consumer %q: %d delivered and %d waiting entries, record says %d and %d", name, delivered, waiting, r.AckPending, r.Waiting)
			}
			nready := 0
			rc := cb.ready.Cursor()
			for k, _ := rc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = rc.Next() {
				nready++
			}
			if nready != ready {
				t.Errorf("consumer %q: ready index holds %d entries, %d pending entries are indexed", name, nready, ready)
			}
			nq := 0
			kc := cb.keys.Cursor()
			for k, _ := kc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = kc.Next() {
				nq++
			}
			total := 0
			for key, ps := range queues {
				total += len(ps)
				for i, p := range ps {
					if cb.keys.Get(keyQueueKey(name, []byte(key), p)) == nil {
						t.Errorf("consumer %q: %s of key %q is not queued", name, p, key)
					}
					e, _ := decodePending(cb.pending.Get(pendingKey(name, p)))
					if i > 0 && (e.attempt > 0 || e.indexed) {
						t.Errorf("consumer %q: %s of key %q is out (attempt %d) behind an earlier event of its key", name, p, key, e.attempt)
					}
				}
			}
			if nq != total {
				t.Errorf("consumer %q: %d key queue entries, %d keyed pending entries", name, nq, total)
			}
			floor := nextOf(r)
			if first != nil && first.less(floor) {
				floor = *first
			}
			if floor != ackFloorOf(r) {
				t.Errorf("consumer %q: ack floor %s, want %s", name, ackFloorOf(r), floor)
			}
			if !r.Stalled {
				floors++
				if cb.floor.Get(floorKey(r.AckFloorRevision, name)) == nil {
					t.Errorf("consumer %q: not in the retention index at %d", name, r.AckFloorRevision)
				}
				if r.AckFloorRevision < st.evFloor {
					t.Errorf("consumer %q: ack floor %d below the events floor %d", name, r.AckFloorRevision, st.evFloor)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if int64(n) != st.consumers {
			t.Errorf("%d consumers stored, %d counted", n, st.consumers)
		}
		if k := cb.floor.Stats().KeyN; k != floors {
			t.Errorf("retention index holds %d entries, %d consumers hold events", k, floors)
		}
		if st.evFloor > st.compactRev+1 {
			t.Errorf("events floor %d above the compacted revision %d + 1", st.evFloor, st.compactRev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsumerDeliversEachKeyInOrder: a fetch hands out new events in stream order, but the
// next event of a key only after the previous one is acknowledged; events without a key go out
// at once; attempts start at 1 and deadlines are the command's time plus the ack wait.
func TestConsumerDeliversEachKeyInOrder(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"orders"}, AckWaitMs: 1000}))
	h.publish(ev("orders", "k1", "a1"), ev("orders", "k1", "a2"), ev("other", "k2", "skip"), ev("orders", "k2", "b1"))
	h.publish(ev("orders", "", "x1"), ev("orders", "k1", "a3"), ev("orders", "", "x2"))
	got := h.fetch("c", 10)
	wantPayloads(t, got, "a1@1", "b1@1", "x1@1", "x2@1")
	for _, d := range got {
		if d.DeadlineUnixNano != h.now.Add(time.Second).UnixNano() {
			t.Fatalf("deadline %d, want the command's time plus 1s", d.DeadlineUnixNano)
		}
	}
	if again := h.fetch("c", 10); len(again) != 0 {
		t.Fatalf("a second fetch handed out %q while everything is out or waiting", payloads(again))
	}
	cs := h.consumer("c")
	if cs.Pending != 4 || cs.LagEvents != 6 {
		t.Fatalf("pending %d lag %d, want 4 and 6", cs.Pending, cs.LagEvents)
	}
	h.ok(ackCmd("c", got[0]))
	wantPayloads(t, h.fetch("c", 10), "a2@1")
	checkConsumerInvariants(t, h.s)
	// Acking everything out lets a3 go, then nothing is left.
	h.ok(ackCmd("c", got[1:]...))
	a2 := h.consumer("c")
	if a2.Pending != 1 {
		t.Fatalf("pending %d, want 1 (a2)", a2.Pending)
	}
	checkConsumerInvariants(t, h.s)
}

// TestConsumerRedeliversAfterTheDeadline: an unacknowledged delivery goes out again once the
// command time passes its deadline, with the next attempt, and not before; a nak makes it due
// at once.
func TestConsumerRedeliversAfterTheDeadline(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000}))
	h.publish(ev("t", "k", "1"))
	wantPayloads(t, h.fetch("c", 1), "1@1")
	h.now = h.now.Add(time.Second - time.Nanosecond)
	if got := h.fetch("c", 1); len(got) != 0 {
		t.Fatalf("redelivered %q before the deadline", payloads(got))
	}
	h.now = h.now.Add(time.Nanosecond)
	second := h.fetch("c", 1)
	wantPayloads(t, second, "1@2")
	h.ok(nakCmd("c", second[0]))
	wantPayloads(t, h.fetch("c", 1), "1@3")
	if cs := h.consumer("c"); cs.Redelivered != 2 || cs.Pending != 1 {
		t.Fatalf("redelivered %d pending %d, want 2 and 1", cs.Redelivered, cs.Pending)
	}
	checkConsumerInvariants(t, h.s)
}

// TestStaleAckRefused: an ack of an attempt older than the latest delivery is refused, and
// changes nothing; the latest attempt's ack is taken; a second ack of the same event is refused.
func TestStaleAckRefused(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000}))
	h.publish(ev("t", "k", "1"), ev("t", "k", "2"))
	first := h.fetch("c", 5)
	h.now = h.now.Add(2 * time.Second)
	second := h.fetch("c", 5)
	wantPayloads(t, second, "1@2")
	wantErr(t, h.cmd(ackCmd("c", first...)).Err, ErrStaleAttempt)
	wantErr(t, h.cmd(nakCmd("c", first...)).Err, ErrStaleAttempt)
	if got := h.fetch("c", 5); len(got) != 0 {
		t.Fatalf("the refused ack let %q go", payloads(got))
	}
	h.ok(ackCmd("c", second...))
	wantErr(t, h.cmd(ackCmd("c", second...)).Err, ErrNotPending)
	wantPayloads(t, h.fetch("c", 5), "2@1")
	future := &logpb.Delivery{Event: second[0].Event, Attempt: 9}
	wantErr(t, h.cmd(ackCmd("c", future)).Err, ErrNotPending)
	wantErr(t, h.cmd(ackCmd("nobody", second...)).Err, ErrConsumerNotFound)
	checkConsumerInvariants(t, h.s)
}

// TestConsumerDeadLettersAfterMaxDeliver: after max_deliver attempts, the fetch that finds the
// event due publishes it to the dead-letter topic (headers naming the original) and counts it
// as acknowledged, which frees its key.
func TestConsumerDeadLettersAfterMaxDeliver(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000, MaxDeliver: 2}))
	h.publish(ev("t", "k", "poison"), ev("t", "k", "next"))
	wantPayloads(t, h.fetch("c", 5), "poison@1")
	h.now = h.now.Add(time.Second)
	wantPayloads(t, h.fetch("c", 5), "poison@2")
	h.now = h.now.Add(time.Second)
	if got := h.fetch("c", 5); len(got) != 0 {
		t.Fatalf("fetch after the last attempt handed out %q", payloads(got))
	}
	wantPayloads(t, h.fetch("c", 5), "next@1")
	f, _ := NewEventFilter([]string{"c.dead-letter"})
	dead, _, err := h.s.Events(1, 0, 10, f)
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters %v, %v", dead, err)
	}
	d := dead[0]
	if string(d.Payload) != "poison" || string(d.Key) != "k" || d.Headers[HeaderOriginalTopic] != "t" || d.Headers[HeaderAttempts] != "2" ||
		d.Headers[HeaderDeadLetterConsumer] != "c" || d.Headers[HeaderOriginalPosition] == "" || d.Headers[HeaderOriginalID] == "" {
		t.Fatalf("dead letter %v", d)
	}
	if cs := h.consumer("c"); cs.DeadLettered != 1 || cs.Pending != 1 {
		t.Fatalf("dead-lettered %d pending %d, want 1 and 1", cs.DeadLettered, cs.Pending)
	}
	checkConsumerInvariants(t, h.s)
}

// TestConsumersShareWork: fetchers of one consumer never get the same delivery while it is out
// (a work queue), and together they get every event.
func TestConsumersShareWork(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 60_000}))
	for i := range 10 {
		h.publish(ev("t", "", fmt.Sprint(i)))
	}
	seen := map[string]int{}
	for round := 0; ; round++ {
		a, b := h.fetch("c", 2), h.fetch("c", 3)
		if len(a)+len(b) == 0 {
			break
		}
		for _, d := range append(a, b...) {
			seen[string(d.Event.Payload)]++
		}
		if round%2 == 0 {
			h.ok(ackCmd("c", a...)) // b's stay out: they must not come back within the ack wait
		}
	}
	if len(seen) != 10 {
		t.Fatalf("fetchers got %d distinct events, want 10", len(seen))
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("event %s handed out %d times within its ack wait", p, n)
		}
	}
	checkConsumerInvariants(t, h.s)
}

// TestMaxAckPending: no more deliveries await an ack than max_ack_pending.
func TestMaxAckPending(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, MaxAckPending: 3}))
	for i := range 5 {
		h.publish(ev("t", "", fmt.Sprint(i)))
	}
	got := h.fetch("c", 10)
	wantPayloads(t, got, "0@1", "1@1", "2@1")
	if more := h.fetch("c", 10); len(more) != 0 {
		t.Fatalf("handed out %q past max_ack_pending", payloads(more))
	}
	h.ok(ackCmd("c", got[0]))
	wantPayloads(t, h.fetch("c", 10), "3@1")
}

// TestConsumerConfigRefusals: names, limits and the dead-letter topic are checked; creating the
// same consumer again is harmless, with another configuration refused.
func TestConsumerConfigRefusals(t *testing.T) {
	h := newHarness(t, Options{})
	for name, c := range map[string]*logpb.ConsumerConfig{
		"empty name":          {Topics: []string{"t"}},
		"bad name":            {Name: "a b", Topics: []string{"t"}},
		"long name":           {Name: strings.Repeat("n", MaxConsumerNameBytes+1), Topics: []string{"t"}},
		"no topic":            {Name: "c"},
		"bad topic":           {Name: "c", Topics: []string{"a b"}},
		"ack wait":            {Name: "c", Topics: []string{"t"}, AckWaitMs: 1},
		"max ack pending":     {Name: "c", Topics: []string{"t"}, MaxAckPending: MaxAckPendingCeiling + 1},
		"max deliver":         {Name: "c", Topics: []string{"t"}, MaxDeliver: -1},
		"own dead letters":    {Name: "c", Topics: []string{"c.*"}},
		"future dead letters": {Name: "c", Topics: []string{"*"}},
	} {
		if r := h.cmd(consumerCmd(c)); r.Err == nil {
			t.Errorf("%s: created", name)
		}
	}
	for _, c := range []*logpb.Command{fetchCmd("c", MaxFetchEvents+1), {Op: &logpb.Command_Ack{Ack: &logpb.AckRequest{Consumer: "c"}}}} {
		if r := h.cmd(c); !errors.Is(r.Err, ErrInvalidArgument) {
			t.Errorf("%v: %v", c, r.Err)
		}
	}
	cfg := &logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}}
	h.ok(consumerCmd(cfg))
	h.ok(consumerCmd(cfg))
	wantErr(t, h.cmd(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"u"}})).Err, ErrConsumerExists)
	wantErr(t, h.cmd(fetchCmd("d", 1)).Err, ErrConsumerNotFound)
	h.publish(ev("t", "", "x"))
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	h.ok(&logpb.Command{Op: &logpb.Command_ConsumerDelete{ConsumerDelete: &logpb.ConsumerDeleteRequest{Name: "c"}}})
	h.put("k", "v")
	wantErr(t, h.cmd(consumerCmd(&logpb.ConsumerConfig{Name: "old", Topics: []string{"t"}, StartRevision: 1})).Err, ErrCompacted)
	checkConsumerInvariants(t, h.s)
}

// TestTooManyConsumers: MaxConsumers is enforced; deleting one frees its place.
func TestTooManyConsumers(t *testing.T) {
	h := newHarness(t, Options{})
	var cmds []*logpb.Command
	for i := range MaxConsumers {
		cmds = append(cmds, consumerCmd(&logpb.ConsumerConfig{Name: fmt.Sprint("c", i), Topics: []string{"t"}}))
	}
	for _, r := range h.batch(cmds...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	wantErr(t, h.cmd(consumerCmd(&logpb.ConsumerConfig{Name: "one-more", Topics: []string{"t"}})).Err, ErrTooManyConsumers)
	h.ok(&logpb.Command{Op: &logpb.Command_ConsumerDelete{ConsumerDelete: &logpb.ConsumerDeleteRequest{Name: "c7"}}})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "one-more", Topics: []string{"t"}}))
	checkConsumerInvariants(t, h.s)
}

// TestRetentionHoldsEventsPastKeyCompaction: compaction of the key history leaves the events a
// consumer has not acknowledged readable; once acknowledged they go.
func TestRetentionHoldsEventsPastKeyCompaction(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}}))
	first := h.publish(ev("t", "", "1"))
	h.publish(ev("t", "", "2"))
	h.put("k", "v")
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	h.put("k", "v2") // a batch for physical compaction
	if got := positions(allEvents(t, h.s, first)); len(got) != 2 {
		t.Fatalf("events held for the consumer: %q", got)
	}
	if _, _, err := h.s.Events(first-1, 0, 10, EventFilter{all: true}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("events below the consumer's floor: %v", err)
	}
	got := h.fetch("c", 10)
	wantPayloads(t, got, "1@1", "2@1")
	h.ok(ackCmd("c", got[0]))
	h.put("k", "v3")
	if got := positions(allEvents(t, h.s, first+1)); len(got) != 1 {
		t.Fatalf("after the first ack: %q", got)
	}
	if _, _, err := h.s.Events(first, 0, 10, EventFilter{all: true}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("the acknowledged event is still readable: %v", err)
	}
	h.ok(ackCmd("c", got[1]))
	h.put("k", "v4")
	if n := len(allEvents(t, h.s, h.s.Rev())); n != 0 {
		t.Fatalf("%d events left after every ack", n)
	}
	if cs := h.consumer("c"); cs.Stalled || cs.LagEvents != 0 {
		t.Fatalf("consumer %v", cs)
	}
	checkConsumerInvariants(t, h.s)
}

// TestRetentionStallsPastMaxAge: a consumer that holds events older than its max age when
// compaction comes is stalled: the events go, its state says why, and its next fetch skips to
// the retained events (counting the pending ones lost) and holds events again.
func TestRetentionStallsPastMaxAge(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "slow", Topics: []string{"t"}, MaxAgeSeconds: 60}))
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "quiet", Topics: []string{"rare"}, MaxAgeSeconds: 60}))
	h.publish(ev("t", "k", "1"), ev("t", "k", "2"))
	wantPayloads(t, h.fetch("slow", 10), "1@1")
	h.now = h.now.Add(30 * time.Second)
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	if cs := h.consumer("slow"); cs.Stalled {
		t.Fatalf("stalled within its max age: %v", cs)
	}
	h.now = h.now.Add(31 * time.Second)
	h.put("k", "v")
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	cs := h.consumer("slow")
	if !cs.Stalled || !strings.Contains(cs.StalledReason, "max age") {
		t.Fatalf("past its max age: %v", cs)
	}
	if q := h.consumer("quiet"); q.Stalled {
		t.Fatalf("a consumer of another topic was stalled: %v", q)
	}
	h.put("k", "v2")
	if n := len(allEvents(t, h.s, h.s.Rev())); n != 0 {
		t.Fatalf("%d events kept for a stalled consumer", n)
	}
	checkConsumerInvariants(t, h.s)
	h.publish(ev("t", "k", "3"))
	wantPayloads(t, h.fetch("slow", 10), "3@1")
	cs = h.consumer("slow")
	if cs.Stalled || !strings.Contains(cs.StalledReason, "2 pending events lost") {
		t.Fatalf("after skipping: %v", cs)
	}
	checkConsumerInvariants(t, h.s)
}

// TestRetentionStallsPastMaxBytes: the same for max bytes.
func TestRetentionStallsPastMaxBytes(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, MaxBytes: 1000}))
	h.publish(ev("t", "", strings.Repeat("x", 400)))
	h.publish(ev("t", "", strings.Repeat("y", 400)))
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	if cs := h.consumer("c"); cs.Stalled {
		t.Fatalf("stalled within its max bytes: %v", cs)
	}
	h.publish(ev("t", "", strings.Repeat("z", 400)))
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	if cs := h.consumer("c"); !cs.Stalled || !strings.Contains(cs.StalledReason, "max bytes") {
		t.Fatalf("past its max bytes: %v", cs)
	}
	checkConsumerInvariants(t, h.s)
}

// TestAckInTransaction: an ack inside a transaction applies with the branch's effect, all or
// nothing; a second copy of the transaction is refused whole (the event awaits no ack), and so
// is one that acknowledges a stale attempt.
func TestAckInTransaction(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000}))
	h.publish(ev("t", "a", "1"), ev("t", "b", "2"))
	ds := h.fetch("c", 10)
	txnFor := func(d *logpb.Delivery, value string) *logpb.Command {
		return cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{
			opPut("effect/"+string(d.Event.Key), value),
			{Request: &logpb.RequestOp_RequestAck{RequestAck: ackReq("c", []*logpb.Delivery{d}, nil)}},
		}})
	}
	r := h.ok(txnFor(ds[0], "once")).(*logpb.TxnResponse)
	if r.Responses[1].GetResponseAck() == nil {
		t.Fatalf("txn responses %v", r.Responses)
	}
	rev := h.s.Rev()
	wantErr(t, h.cmd(txnFor(ds[0], "twice")).Err, ErrNotPending)
	h.now = h.now.Add(time.Second)
	again := h.fetch("c", 10)
	wantPayloads(t, again, "2@2")
	wantErr(t, h.cmd(txnFor(ds[1], "stale")).Err, ErrStaleAttempt)
	if h.s.Rev() != rev {
		t.Fatal("a refused transaction wrote")
	}
	if kv, _ := h.get("effect/a", 0); string(kv.Value) != "once" {
		t.Fatalf("effect/a = %q", kv.Value)
	}
	if _, ok := h.get("effect/b", 0); ok {
		t.Fatal("the stale transaction applied its effect")
	}
	h.ok(txnFor(again[0], "once"))
	if cs := h.consumer("c"); cs.Pending != 0 || cs.LagEvents != 0 {
		t.Fatalf("consumer %v", cs)
	}
	// An ack op of its own session is refused: it takes the transaction's.
	bad := txnFor(again[0], "x")
	bad.GetTxn().Success[1].GetRequestAck().Session = &logpb.Session{ClientId: 1, Sequence: 1}
	wantErr(t, h.cmd(bad).Err, ErrInvalidArgument)
	checkConsumerInvariants(t, h.s)
}

// TestAckSessionRetry: a retried sessioned ack gets the first answer back.
func TestAckSessionRetry(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}}))
	h.publish(ev("t", "", "1"))
	ds := h.fetch("c", 1)
	c := ackCmd("c", ds...)
	c.GetAck().Session = &logpb.Session{ClientId: 5, Sequence: 1}
	h.ok(c)
	if r := h.cmd(proto.CloneOf(c)); r.Err != nil {
		t.Fatalf("retry of an applied ack: %v", r.Err)
	}
}

// TestConsumersSurviveReopenAndRestore: a consumer's position and pending deliveries are in the
// file: after a reopen, and in a store restored from a snapshot, fetches and acks go on where
// they were.
func TestConsumersSurviveReopenAndRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kv.db")
	h := newHarness(t, Options{})
	h.s.Close()
	var err error
	if h.s, err = Open(path, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000}))
	h.publish(ev("t", "k", "1"), ev("t", "k", "2"), ev("t", "", "3"))
	out := h.fetch("c", 10)
	wantPayloads(t, out, "1@1", "3@1")
	h.s.Close()
	if h.s, err = Open(path, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	defer h.s.Close()
	checkConsumerInvariants(t, h.s)
	var snap bytes.Buffer
	if _, err := h.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	other := newHarness(t, Options{})
	if err := other.s.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	other.index = h.index
	for _, x := range []*harness{h, other} {
		if got := x.fetch("c", 10); len(got) != 0 {
			t.Fatalf("after reopen or restore, fetched %q while 1 and 3 are out", payloads(got))
		}
		x.ok(ackCmd("c", out[0]))
		wantPayloads(t, x.fetch("c", 10), "2@1")
		x.now = x.now.Add(time.Second)
		got := x.fetch("c", 10)
		wantPayloads(t, got, "2@2", "3@2")
		checkConsumerInvariants(t, x.s)
	}
}

// TestConsumerProgress: the committed record and pending events, in position order, with
// their attempts and deadlines; an event waiting behind its key has attempt 0.
func TestConsumerProgress(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(consumerCmd(&logpb.ConsumerConfig{Name: "c", Topics: []string{"t"}, AckWaitMs: 1000}))
	if _, _, err := h.s.ConsumerProgress("none"); !errors.Is(err, ErrConsumerNotFound) {
		t.Fatalf("unknown consumer: %v, want ErrConsumerNotFound", err)
	}
	rev := h.publish(ev("t", "k", "1"), ev("t", "k", "2"), ev("t", "", "3"))
	got := h.fetch("c", 10)
	wantPayloads(t, got, "1@1", "3@1")
	h.ok(ackCmd("c", got[1]))
	rec, pending, err := h.s.ConsumerProgress("c")
	if err != nil {
		t.Fatal(err)
	}
	deadline := h.now.Add(time.Second).UnixNano()
	want := []PendingDelivery{{Revision: rev, Index: 0, Attempt: 1, Deadline: deadline, Key: []byte("k")},
		{Revision: rev, Index: 1, Attempt: 0, Key: []byte("k")}}
	if len(pending) != len(want) {
		t.Fatalf("pending %+v, want %+v", pending, want)
	}
	for i := range want {
		p, w := pending[i], want[i]
		if p.Revision != w.Revision || p.Index != w.Index || p.Attempt != w.Attempt || p.Deadline != w.Deadline || !bytes.Equal(p.Key, w.Key) {
			t.Fatalf("pending[%d] = %+v, want %+v", i, p, w)
		}
	}
	if rec.AckFloorRevision != rev || rec.AckFloorIndex != 0 || rec.NextRevision != rev+1 || rec.AckPending != 1 || rec.Waiting != 1 {
		t.Fatalf("record %v: want ack floor %d.0, next %d.0, 1 pending, 1 waiting", rec, rev, rev+1)
	}
}
