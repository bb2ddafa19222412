package sim

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// The durable consumers' workload under SMFSM, beside the writes of fsmwork.go. Two consumers
// are created early (the create is proposed again until one is answered; it is idempotent):
// one on the topic "orders", one on the patterns "audit.*" and "jobs/*", both from revision 1,
// with a small ack wait (5 to 30 ticks of the simulated clock) and max deliver (2 or 3), and
// on some seeds a small max ack pending. Fetches and acks are log commands proposed through a
// random member, as internal/server proposes them, carrying the simulated time like every
// command: the fetch's answer says which events go out with which attempt and deadline. Each
// delivery the client receives is then acknowledged soon, acknowledged late (after its
// deadline: the ack is refused as a stale attempt if the event went out again meanwhile),
// nakked, or dropped (it is redelivered at its deadline, and dead-lettered after max deliver).
// Acks carry a session of their own, as the client's do.
//
// Once the cluster is live after the faults, the consumers are drained: fetches through the
// leader, every delivery acknowledged at once, until the leader's committed state has nothing
// pending and nothing to hand out, within drainTicks; then consumercheck.go's final checks run.

// drainTicks plus drainTicksPerEvent per event the consumers have yet to settle (their lag when
// the drain starts) bound the drain after the faults stop. Events of one key go out one at a
// time, each after the ack of the previous one: an ack and the next fetch, proposed together,
// commit in a round or two.
const (
	drainTicks         = 1000
	drainTicksPerEvent = 20
	drainFetchTimeout  = 10 * electionTick
)

// consProp is a consumer command the workload proposed.
type consProp struct {
	kind string // create, fetch, ack
	sc   *simConsumer
	acks []*logpb.EventPosition // an ack's acknowledgements, as the workload meant them
}

// heldDelivery is a delivery the client holds, and when and how it answers it.
type heldDelivery struct {
	sc  *simConsumer
	pos *logpb.EventPosition
	at  uint64 // the tick of its ack or nak
	nak bool
}

type consWork struct {
	r         *nodeRun
	c         *consumerCheck
	props     map[uint64]consProp
	held      []heldDelivery
	fetchRate float64
	// drainBy is the last tick of the drain (0: not draining); lastFetch the tick of each
	// consumer's last drain fetch.
	drainBy   uint64
	lastFetch map[*simConsumer]uint64
	// inflight: a consumer's drain fetch awaits its answer (one at a time: a slow cluster
	// would otherwise fill its log with fetches).
	inflight map[*simConsumer]bool
}

// newConsWork draws the consumers' configurations and the workload's rates.
func (r *nodeRun) newConsWork() *consWork {
	rng := r.rng
	cfg := func(name string, topics ...string) *logpb.ConsumerConfig {
		c := &logpb.ConsumerConfig{Name: name, Topics: topics, StartRevision: 1,
			AckWaitMs: pick(rng, 5*nodeTick, 10*nodeTick, 30*nodeTick).Milliseconds(), MaxDeliver: int32(pick(rng, 2, 3))}
		if rng.IntN(3) == 0 {
			c.MaxAckPending = int32(pick(rng, 2, 8))
		}
		return c
	}
	c := newConsumerCheck(r, r.evs, cfg("orders-c", "orders"), cfg("pattern-c", "audit.*", "jobs/*"))
	return &consWork{r: r, c: c, props: map[uint64]consProp{}, fetchRate: pick(rng, 0.05, 0.15, 0.3),
		lastFetch: map[*simConsumer]uint64{}, inflight: map[*simConsumer]bool{}}
}

// command encodes a consumer command proposed at member m, stamped as fsm.Proposer stamps it.
func (w *consWork) command(m *member, id uint64, cmd *logpb.Command) []byte {
	cmd.Id, cmd.Proposer = id, uint64(m.id)
	cmd.TimeUnixNano = w.r.epoch.Add(time.Duration(w.r.now) * nodeTick).UnixNano()
	if v := logpb.Needs(cmd); v > logpb.Version1 {
		cmd.Version = v
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		w.r.fail(CoreContract, "encoding consumer command %d: %v", id, err)
	}
	return data
}

func (w *consWork) propose(m *member, p consProp, cmd *logpb.Command) {
	r := w.r
	r.nextID++
	id := r.nextID
	w.props[id] = p
	r.submit(m, id, w.command(m, id, cmd), func() string { return p.kind + " " + p.sc.name })
}

func (w *consWork) create(m *member, sc *simConsumer) {
	w.propose(m, consProp{kind: "create", sc: sc}, &logpb.Command{Op: &logpb.Command_ConsumerCreate{
		ConsumerCreate: &logpb.ConsumerCreateRequest{Config: proto.CloneOf(sc.cfg)}}})
}

func (w *consWork) fetch(m *member, sc *simConsumer, max int) {
	w.r.st.ConsumerFetches++
	w.propose(m, consProp{kind: "fetch", sc: sc}, &logpb.Command{Op: &logpb.Command_Fetch{
		Fetch: &logpb.FetchRequest{Consumer: sc.name, MaxEvents: int32(max)}}})
}

// tick is the consumers' share of a chaos tick.
func (w *consWork) tick() {
	r, rng := w.r, w.r.rng
	for _, sc := range w.c.cons {
		if !sc.created && rng.IntN(20) == 0 {
			if m := r.randomUp(); m != nil {
				w.create(m, sc)
			}
		}
	}
	if rng.Float64() < w.fetchRate {
		if m := r.randomUp(); m != nil {
			w.fetch(m, w.c.cons[rng.IntN(len(w.c.cons))], 1+rng.IntN(4))
		}
	}
	w.answerDue(r.randomUp)
}

// answerDue proposes, per consumer, one ack command with the held deliveries due now, through
// the member at gives, and reports the consumers it proposed one for.
func (w *consWork) answerDue(at func() *member) map[*simConsumer]bool {
	r := w.r
	sent := map[*simConsumer]bool{}
	for _, sc := range w.c.cons {
		due := false
		for _, h := range w.held {
			due = due || h.sc == sc && h.at <= r.now
		}
		if !due {
			continue
		}
		m := at()
		if m == nil {
			continue // held until someone is up
		}
		a := &logpb.AckRequest{Consumer: sc.name}
		var acks []*logpb.EventPosition
		named := map[evPos]bool{}
		keep := w.held[:0]
		for _, h := range w.held {
			pos := evPos{h.pos.Revision, h.pos.Index}
			if h.sc != sc || h.at > r.now || named[pos] {
				keep = append(keep, h)
				continue
			}
			named[pos] = true
			switch {
			case h.nak:
				a.Naks = append(a.Naks, h.pos)
			case r.o.FSMBugs.AcksAsNaks:
				a.Naks = append(a.Naks, h.pos) // planted bug: the store is told nak
				acks = append(acks, h.pos)
			default:
				a.Acks = append(a.Acks, h.pos)
				acks = append(acks, h.pos)
			}
		}
		w.held = keep
		a.Session = &logpb.Session{ClientId: r.nextID + 1, Sequence: 1} // the ack's own proposal id
		w.propose(m, consProp{kind: "ack", sc: sc, acks: acks}, &logpb.Command{Op: &logpb.Command_Ack{Ack: a}})
		sent[sc] = true
	}
	return sent
}

// answered takes the answer member m gave to consumer command id, applied at index.
func (w *consWork) answered(m raft.NodeID, id, index uint64, res mvcc.Result) {
	p, ok := w.props[id]
	if !ok {
		return
	}
	delete(w.props, id)
	r, sc := w.r, p.sc
	err := res.Err
	switch p.kind {
	case "create":
		if err != nil {
			r.fail(ConsumerState, "n%d: creating consumer %q (index %d): %v", m, sc.name, index, err)
		}
		sc.created = true
	case "fetch":
		w.inflight[sc] = false
		if errors.Is(err, mvcc.ErrConsumerNotFound) {
			return // proposed before the consumer's create applied
		}
		if err != nil {
			r.fail(ConsumerState, "n%d: fetch of consumer %q (index %d) refused: %v", m, sc.name, index, err)
		}
		resp, _ := res.Resp.(*logpb.FetchResponse)
		ds := resp.GetDeliveries()
		w.c.fetched(m, sc, index, ds)
		for _, d := range ds {
			r.st.ConsumerDeliveries++
			if d.Attempt > 1 {
				r.st.ConsumerRedeliveries++
			}
			w.hold(sc, d)
		}
	case "ack":
		switch {
		case err == nil:
			r.st.ConsumerAcks += int64(len(p.acks))
			w.c.ackedOK(m, sc, index, p.acks)
		case errors.Is(err, mvcc.ErrStaleAttempt) || errors.Is(err, mvcc.ErrNotPending):
			r.st.ConsumerAcksRefused++
		default:
			r.fail(ConsumerState, "n%d: ack of consumer %q (index %d) refused: %v", m, sc.name, index, err)
		}
	}
}

// hold decides how the client answers delivery d.
func (w *consWork) hold(sc *simConsumer, d *logpb.Delivery) {
	r, rng := w.r, w.r.rng
	h := heldDelivery{sc: sc, pos: &logpb.EventPosition{Revision: d.Event.Revision, Index: d.Event.Index, Attempt: d.Attempt}, at: r.now}
	if w.drainBy == 0 {
		deadline := uint64(time.Unix(0, d.DeadlineUnixNano).Sub(w.r.epoch) / nodeTick)
		switch k := rng.IntN(20); {
		case k < 11: // soon: usually before the deadline
			h.at = r.now + uint64(rng.IntN(int(sc.cfg.AckWaitMs/nodeTick.Milliseconds())+1))
		case k < 14: // late: after the deadline
			h.at = deadline + 1 + uint64(rng.IntN(5))
		case k < 16:
			h.nak, h.at = true, r.now+uint64(rng.IntN(3))
		default:
			return // dropped: redelivered at its deadline
		}
	}
	w.held = append(w.held, h)
}

// startDrain begins the drain once the cluster is live after the faults.
func (w *consWork) startDrain() {
	var lag int64
	if l := w.r.leader(); l != nil {
		sts, err := l.sm.(*fsmSM).f.Store().Consumers(w.r.epoch.Add(time.Duration(w.r.now) * nodeTick))
		if err != nil {
			w.r.fail(StorageFault, "node %d: reading its consumers: %v", l.id, err)
		}
		for _, st := range sts {
			lag += st.LagEvents
		}
	}
	w.drainBy = w.r.now + drainTicks + drainTicksPerEvent*uint64(lag)
	for i := range w.held {
		if !w.held[i].nak {
			w.held[i].at = w.r.now
		}
	}
}

// drainTick drives the drain through the leader and reports whether the consumers are drained:
// created, nothing held by the client, nothing pending and nothing to hand out in the leader's
// committed state.
func (w *consWork) drainTick() bool {
	r := w.r
	l := r.leader()
	if l == nil {
		return false
	}
	st := l.sm.(*fsmSM).f.Store()
	now := r.epoch.Add(time.Duration(r.now) * nodeTick)
	leader := func() *member { return l }
	acked := w.answerDue(leader)
	drained := true
	for _, sc := range w.c.cons {
		if !sc.created {
			drained = false
			if r.now >= w.lastFetch[sc]+electionTick {
				w.lastFetch[sc] = r.now
				w.create(l, sc)
			}
			continue
		}
		_, pending, err := st.ConsumerProgress(sc.name)
		if errors.Is(err, mvcc.ErrConsumerNotFound) {
			drained = false
			continue
		}
		if err != nil {
			r.fail(StorageFault, "node %d: reading consumer %q: %v", l.id, sc.name, err)
		}
		ready, _, err := st.FetchReady(sc.name, now)
		if err != nil {
			r.fail(StorageFault, "node %d: consumer %q: %v", l.id, sc.name, err)
		}
		if len(pending) == 0 && !ready && w.heldOf(sc) == 0 {
			continue
		}
		drained = false
		// An answer lost (the proposal failed) is waited for drainFetchTimeout ticks: a slow
		// cluster answers late, and fetches proposed meanwhile would only lengthen its log. A
		// fetch right behind an ack hands out what the ack frees.
		if (ready || acked[sc]) && (!w.inflight[sc] || r.now >= w.lastFetch[sc]+drainFetchTimeout) {
			w.lastFetch[sc], w.inflight[sc] = r.now, true
			w.fetch(l, sc, 50)
		}
	}
	if !drained && r.now > w.drainBy {
		r.fail(Liveness, "the consumers were not drained by tick %d: %s", w.drainBy, w.describe(st))
	}
	return drained
}

func (w *consWork) describe(st *mvcc.Store) string {
	var b []byte
	for _, sc := range w.c.cons {
		rec, pending, err := st.ConsumerProgress(sc.name)
		ready, wake, rerr := st.FetchReady(sc.name, w.r.epoch.Add(time.Duration(w.r.now)*nodeTick))
		b = fmt.Appendf(b, "%s: %v, pending %+v (%v), fetch ready %t, wake %d (%v), held by the client %d; ", sc.name, rec, pending, err, ready, wake, rerr, w.heldOf(sc))
	}
	return string(b)
}

// heldOf counts the deliveries of sc the client holds.
func (w *consWork) heldOf(sc *simConsumer) int {
	n := 0
	for _, h := range w.held {
		if h.sc == sc {
			n++
		}
	}
	return n
}

// final runs the consumers' final checks against the leader's committed state, once the event
// stream's final check has read every member's stream.
func (w *consWork) final() {
	r := w.r
	l := r.leader()
	if l == nil {
		return
	}
	st := l.sm.(*fsmSM).f.Store()
	for _, sc := range w.c.cons {
		rec, pending, err := st.ConsumerProgress(sc.name)
		if err != nil && !errors.Is(err, mvcc.ErrConsumerNotFound) {
			r.fail(StorageFault, "node %d: reading consumer %q: %v", l.id, sc.name, err)
		}
		w.c.final(sc, rec, pending)
		r.st.ConsumerDeadLetters += int64(len(sc.dead))
	}
}
