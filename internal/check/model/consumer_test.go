package model

import (
	"testing"

	"github.com/caucus/caucus/internal/check/history"
)

// consumerCase is a consumer history in parts, so that each test plants one bug in a valid run.
type consumerCase struct {
	pubs      []cpub
	fetches   [][]ConsumerDelivery
	processes []cproc
	effects   []ConsumerEffect
	noFinal   bool
}

type cpub struct {
	id, key string
	st      history.Status
	rev     int64
}

type cproc struct {
	d   ConsumerDelivery
	st  history.Status
	rev int64
}

func dlv(id, key string, rev int64, attempt int32) ConsumerDelivery {
	return ConsumerDelivery{ID: id, Key: key, Revision: rev, Attempt: attempt}
}

func eff(d ConsumerDelivery, mod int64) ConsumerEffect {
	return ConsumerEffect{ConsumerDelivery: d, ModRevision: mod}
}

// validConsumer: e1 and e2 (key k0) acknowledged, e3 (no key) unknown, e4 failed. e3's first
// delivery was dropped by a crashed consumer and came back as attempt 2; the slow consumer of
// e2's first attempt was refused.
func validConsumer() *consumerCase {
	e1, e2 := dlv("e1", "k0", 10, 1), dlv("e2", "k0", 12, 1)
	e3a, e3b, e2b := dlv("e3", "", 11, 1), dlv("e3", "", 11, 2), dlv("e2", "k0", 12, 2)
	return &consumerCase{
		pubs: []cpub{
			{"e1", "k0", history.OK, 10},
			{"e3", "", history.Unknown, 0},
			{"e2", "k0", history.OK, 12},
			{"e4", "k1", history.Fail, 0},
		},
		fetches: [][]ConsumerDelivery{{e1, e3a}, {e2}, {e3b, e2b}},
		processes: []cproc{
			{e1, history.OK, 30},
			{e2, history.Fail, 0}, // stale: e2 was redelivered meanwhile
			{e3b, history.OK, 40},
			{e2b, history.OK, 41},
		},
		effects: []ConsumerEffect{eff(e1, 30), eff(e3b, 40), eff(e2b, 41)},
	}
}

func (c *consumerCase) history() []history.Op {
	var b h
	t := int64(0)
	next := func() (int64, int64) { t += 10; return t, t + 5 }
	for i, p := range c.pubs {
		call, ret := next()
		var out any
		if p.st == history.OK {
			out = ConsumerPublishResult{Revision: p.rev}
		}
		b.op(i, call, ret, p.st, ConsumerPublish{ID: p.id, Key: p.key, Via: "publish"}, out)
	}
	for _, f := range c.fetches {
		call, ret := next()
		b.op(10, call, ret, history.OK, ConsumerFetch{Max: 4}, ConsumerFetchResult{Deliveries: f})
	}
	for _, p := range c.processes {
		call, ret := next()
		var out any
		if p.st == history.OK {
			out = ConsumerProcessResult{Revision: p.rev}
		}
		b.op(11, call, ret, p.st, ConsumerProcess{ConsumerDelivery: p.d}, out)
	}
	call, ret := next()
	b.op(12, call, ret, history.OK, ConsumerInfoRead{}, ConsumerInfoResult{})
	if !c.noFinal {
		call, ret = next()
		b.op(12, call, ret, history.OK, ConsumerEffectsRead{Final: true}, ConsumerEffectsResult{Effects: c.effects})
	}
	return b.ops
}

func kinds(r Result) map[string]int {
	m := map[string]int{}
	for _, v := range r.Violations {
		m[v.Kind]++
	}
	return m
}

func TestConsumerAcceptsValid(t *testing.T) {
	got := CheckConsumer(validConsumer().history())
	if !got.Valid {
		t.Fatalf("valid history rejected: %v", got)
	}
	if got.Stats["deliveries-dropped"] != 1 || got.Stats["redeliveries"] != 2 || got.Stats["effects"] != 3 {
		t.Errorf("stats %v", got.Stats)
	}
	// The unknown publish may also have had no effect at all (it never happened).
	c := validConsumer()
	c.effects = c.effects[:1:1]
	c.effects = append(c.effects, eff(dlv("e2", "k0", 12, 2), 41))
	c.processes = []cproc{c.processes[0], c.processes[1], {dlv("e3", "", 11, 2), history.Unknown, 0}, c.processes[3]}
	if got := CheckConsumer(c.history()); !got.Valid {
		t.Fatalf("unknown publish without an effect rejected: %v", got)
	}
}

// TestConsumerCatches plants one bug at a time in the valid history; the checker must report
// it, under the expected kind.
func TestConsumerCatches(t *testing.T) {
	for _, tc := range []struct {
		name, kind string
		plant      func(c *consumerCase)
	}{
		{"duplicate effect", "duplicate", func(c *consumerCase) {
			// e1 processed twice: its ack did not stop a second delivery from taking effect.
			d := dlv("e1", "k0", 10, 2)
			c.fetches = append(c.fetches, []ConsumerDelivery{d})
			c.processes = append(c.processes, cproc{d, history.OK, 50})
			c.effects = append(c.effects, eff(d, 50))
		}},
		{"duplicate effect of an unknown publish", "duplicate", func(c *consumerCase) {
			d := dlv("e3", "", 11, 1)
			c.processes = append(c.processes, cproc{d, history.OK, 50})
			c.effects = append(c.effects, eff(d, 50))
		}},
		{"lost event", "lost", func(c *consumerCase) {
			// e2 acknowledged by its publisher, never delivered after its stale attempt.
			c.fetches = c.fetches[:2]
			c.fetches = append(c.fetches, []ConsumerDelivery{dlv("e3", "", 11, 2)})
			c.processes = c.processes[:3]
			c.effects = c.effects[:2]
		}},
		{"lost effect of an acknowledged transaction", "lost-effect", func(c *consumerCase) {
			c.effects = c.effects[:2]
			c.effects = append(c.effects, eff(dlv("e2", "k0", 12, 1), 41)) // e2 still has one
			c.processes[1].st, c.processes[1].rev = history.Unknown, 0
		}},
		{"effect of a failed transaction", "unexpected", func(c *consumerCase) {
			c.effects[2] = eff(dlv("e2", "k0", 12, 1), 41) // the refused attempt took effect
			c.processes[3].st = history.Unknown
		}},
		{"effect of a failed publish", "unexpected", func(c *consumerCase) {
			d := dlv("e4", "k1", 20, 1)
			c.fetches = append(c.fetches, []ConsumerDelivery{d})
			c.processes = append(c.processes, cproc{d, history.OK, 50})
			c.effects = append(c.effects, eff(d, 50))
		}},
		{"phantom effect", "phantom-effect", func(c *consumerCase) {
			c.effects = append(c.effects, eff(dlv("e9", "", 20, 1), 50))
		}},
		{"phantom delivery", "phantom-delivery", func(c *consumerCase) {
			c.fetches = append(c.fetches, []ConsumerDelivery{dlv("e9", "", 20, 1)})
		}},
		{"double delivery", "double-delivery", func(c *consumerCase) {
			// attempt 1 of e1 handed to two fetchers
			c.fetches = append(c.fetches, []ConsumerDelivery{dlv("e1", "k0", 10, 1)})
		}},
		{"delivery with the wrong key", "mismatch", func(c *consumerCase) {
			c.fetches[1][0].Key = "k1"
		}},
		{"effects out of key order", "order", func(c *consumerCase) {
			// e2's effect written before e1's: the consumer handed out e2 before e1 was acked.
			c.effects[0].ModRevision, c.effects[2].ModRevision = 41, 30
		}},
		{"publishes out of real-time order", "order", func(c *consumerCase) {
			// e2 was invoked after e1 was acknowledged at 10, yet the stream put it first.
			c.pubs[2].rev = 9
			c.effects[2].Revision = 9
		}},
		{"effect at another position than the publish", "mismatch", func(c *consumerCase) {
			c.effects[0].Revision = 11
		}},
		{"no final read", "no-final-read", func(c *consumerCase) { c.noFinal = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConsumer()
			tc.plant(c)
			got := CheckConsumer(c.history())
			if got.Valid || kinds(got)[tc.kind] == 0 {
				t.Fatalf("%s not reported as %q: %v", tc.name, tc.kind, got)
			}
		})
	}
}
