package mvcc

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

// consumerModel tracks what a consumer was told, to check the store's answers against.
type consumerModel struct {
	name    string
	filter  EventFilter
	start   int64
	latest  map[position]int32 // the latest attempt delivered of each pending event
	acked   map[position]bool  // acknowledged (an ack the store took)
	dead    map[position]bool  // dead-lettered
	floor   int64
	deliv   position
	handed  int
	stalled bool
}

// TestConsumerModel drives consumers with random publishes, fetches by several fetchers, acks
// (some of stale attempts), naks, time, compactions and reopens, and checks every answer:
// an acknowledged or dead-lettered event is never delivered again; attempts count up by one;
// a key's event is first delivered only after every earlier event of its key is acknowledged or
// dead-lettered; an ack is taken exactly when it names the latest attempt of a pending event;
// the ack floor and the delivered position never go back; the indexes agree with the records;
// and, drained at the end, every selected event was acknowledged or dead-lettered.
func TestConsumerModel(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runConsumerModel(t, uint64(seed)) })
	}
}

var traceModel = false

func runConsumerModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	path := filepath.Join(t.TempDir(), "kv.db")
	opts := Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, s: s, now: baseTime}
	defer func() { h.s.Close() }()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	var models []*consumerModel
	for _, c := range []struct {
		name   string
		topics []string
	}{{"all", []string{"t.*"}}, {"x", []string{"t.x"}}} {
		h.ok(consumerCmd(&logpb.ConsumerConfig{Name: c.name, Topics: c.topics, AckWaitMs: 1000, MaxDeliver: 3, MaxAckPending: 5}))
		f, _ := NewEventFilter(c.topics)
		models = append(models, &consumerModel{name: c.name, filter: f, start: h.s.Rev() + 1,
			latest: map[position]int32{}, acked: map[position]bool{}, dead: map[position]bool{}})
	}
	type published struct {
		pos   position
		topic string
		key   string
	}
	var events []published
	deadSeen := position{}
	// readDead records the dead letters published since the last look.
	readDead := func() {
		f, _ := NewEventFilter([]string{"all.dead-letter", "x.dead-letter"})
		from := maxPos(deadSeen, position{h.s.CompactRev() + 1, 0})
		evs, _, err := h.s.Events(from.rev, from.idx, 1<<20, f)
		if err != nil {
			fail("dead letters: %v", err)
		}
		for _, e := range evs {
			p := position{e.Revision, e.Index}
			if p.less(deadSeen) {
				continue
			}
			deadSeen = p.after()
			if traceModel {
				t.Logf("dead letter %s: %v", p, e.Headers)
			}
			var orig position
			fmt.Sscanf(e.Headers[HeaderOriginalPosition], "%d.%d", &orig.rev, &orig.idx)
			for _, m := range models {
				if m.name == e.Headers[HeaderDeadLetterConsumer] {
					if m.acked[orig] || m.dead[orig] {
						fail("consumer %s dead-lettered %s, which was acknowledged or dead-lettered before", m.name, orig)
					}
					m.dead[orig] = true
					delete(m.latest, orig)
				}
			}
		}
	}
	// earlierOfKeyDone reports whether every selected event of key before p is acknowledged or
	// dead-lettered.
	earlierOfKeyDone := func(m *consumerModel, p position, key string) bool {
		for _, e := range events {
			if !e.pos.less(p) {
				break
			}
			if e.key == key && e.pos.rev >= m.start && m.filter.Match(e.topic) && !m.acked[e.pos] && !m.dead[e.pos] {
				return false
			}
		}
		return true
	}
	keyOf := map[position]string{}
	fetch := func(m *consumerModel, n int) []*logpb.Delivery {
		ds := h.fetch(m.name, n)
		if traceModel {
			t.Logf("fetch %s at %v: %q", m.name, h.now.Sub(baseTime), payloads(ds))
			for _, d := range ds {
				t.Logf("  %s %d.%d@%d key %s", m.name, d.Event.Revision, d.Event.Index, d.Attempt, d.Event.Key)
			}
		}
		readDead()
		for _, d := range ds {
			p := position{d.Event.Revision, d.Event.Index}
			if m.acked[p] || m.dead[p] {
				fail("consumer %s: %s delivered again (attempt %d) after it was acknowledged or dead-lettered", m.name, p, d.Attempt)
			}
			if !m.filter.Match(d.Event.Topic) || p.rev < m.start {
				fail("consumer %s: delivered %s of topic %s, not selected", m.name, p, d.Event.Topic)
			}
			if d.Attempt != m.latest[p]+1 {
				fail("consumer %s: %s delivered as attempt %d after attempt %d", m.name, p, d.Attempt, m.latest[p])
			}
			if d.Attempt == 1 {
				m.handed++
				if k := string(d.Event.Key); k != "" && !earlierOfKeyDone(m, p, k) {
					fail("consumer %s: %s of key %q delivered before an earlier event of its key was acknowledged", m.name, p, k)
				}
			}
			m.latest[p] = d.Attempt
			keyOf[p] = string(d.Event.Key)
		}
		return ds
	}
	ack := func(m *consumerModel, d *logpb.Delivery, nak bool) {
		p := position{d.Event.Revision, d.Event.Index}
		want := m.latest[p] == d.Attempt && !m.acked[p] && !m.dead[p]
		c := ackCmd(m.name, d)
		if nak {
			c = nakCmd(m.name, d)
		}
		r := h.cmd(c)
		if traceModel {
			t.Logf("ack %s %s@%d nak=%v: %v", m.name, p, d.Attempt, nak, r.Err)
		}
		if (r.Err == nil) != want {
			fail("consumer %s: ack (nak %v) of %s attempt %d (latest %d, acked %v, dead %v): %v", m.name, nak, p, d.Attempt, m.latest[p], m.acked[p], m.dead[p], r.Err)
		}
		if r.Err == nil && !nak {
			m.acked[p] = true
			delete(m.latest, p)
		}
	}
	checkPositions := func() {
		for _, m := range models {
			cs := h.consumer(m.name)
			d := position{cs.DeliveredRevision, cs.DeliveredIndex}
			if cs.AckFloor < m.floor || d.less(m.deliv) {
				fail("consumer %s: positions went back: ack floor %d -> %d, delivered %s -> %s", m.name, m.floor, cs.AckFloor, m.deliv, d)
			}
			if cs.Stalled {
				fail("consumer %s stalled: %s", m.name, cs.StalledReason)
			}
			m.floor, m.deliv = cs.AckFloor, d
		}
		checkConsumerInvariants(t, h.s)
	}
	var out []*logpb.Delivery // deliveries the fetchers hold, for acks (some become stale)
	outOf := map[*logpb.Delivery]*consumerModel{}
	for step := 0; step < 250; step++ {
		switch x := rng.IntN(100); {
		case x < 30:
			var evs []*logpb.Event
			for range 1 + rng.IntN(3) {
				topic := []string{"t.x", "t.y", "other"}[rng.IntN(3)]
				key := []string{"", "k0", "k1", "k2"}[rng.IntN(4)]
				evs = append(evs, ev(topic, key, fmt.Sprint(step)))
			}
			rev := h.publish(evs...)
			for i, e := range evs {
				events = append(events, published{pos: position{rev, int32(i)}, topic: e.Topic, key: string(e.Key)})
			}
		case x < 60:
			m := models[rng.IntN(len(models))]
			for _, d := range fetch(m, 1+rng.IntN(4)) {
				out = append(out, d)
				outOf[d] = m
			}
		case x < 80 && len(out) > 0:
			i := rng.IntN(len(out))
			d := out[i]
			ack(outOf[d], d, rng.IntN(5) == 0)
			out = append(out[:i], out[i+1:]...)
		case x < 90:
			h.now = h.now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
		case x < 95:
			if rev := h.s.Rev(); rev > h.s.CompactRev() {
				h.ok(cmdOf(&logpb.CompactionRequest{Revision: rev}))
			}
		default:
			h.s.Close()
			if h.s, err = Open(path, opts); err != nil {
				fail("reopen: %v", err)
			}
		}
		checkPositions()
	}
	// Drain: fetch and acknowledge everything; redeliveries and dead letters resolve the rest.
	for round := 0; ; round++ {
		if round > 200 {
			fail("consumers not drained after 200 rounds: %v / %v", h.consumer("all"), h.consumer("x"))
		}
		busy := false
		for _, m := range models {
			for _, d := range fetch(m, 5) {
				busy = true
				ack(m, d, false)
			}
		}
		if !busy {
			h.now = h.now.Add(2 * time.Second)
			lagging := false
			for _, m := range models {
				if cs := h.consumer(m.name); cs.LagEvents > 0 {
					lagging = true
				}
			}
			if !lagging {
				break
			}
		}
		checkPositions()
	}
	for _, m := range models {
		var missing []string
		for _, e := range events {
			if e.pos.rev >= m.start && m.filter.Match(e.topic) && !m.acked[e.pos] && !m.dead[e.pos] {
				missing = append(missing, e.pos.String())
			}
		}
		if len(missing) > 0 {
			fail("consumer %s: events never acknowledged nor dead-lettered: %s", m.name, strings.Join(missing, " "))
		}
	}
}
