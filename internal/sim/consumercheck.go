package sim

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// The durable consumer checks under SMFSM (internal/mvcc/consumer*.go). The workload
// (fsmconsumer.go) creates consumers, fetches and acknowledges through the log; at every commit,
// snapshot install and start each member's committed consumer state (mvcc.Store.ConsumerProgress:
// the record and the pending events) is read and checked, and so is every answer. The checks,
// by Kind:
//
//   - ConsumerPosition: a consumer's ack floor or next position at some applied index is behind
//     its position at a lower applied index (on this member or any other: the position is a
//     function of the log, so it only rises with the applied index, across crashes, power-loss
//     rebuilds and snapshot installs), or a consumer a member held at some index is gone at a
//     later one.
//   - ConsumerState: members disagree on the consumers (records, pending events with their
//     attempts, deadlines and keys) at one applied index; a pending event below the ack floor
//     or at or after next; an answer the workload cannot get from a sound store (a create of
//     the same configuration refused, a fetch or an ack refused for another reason than a
//     stale attempt or an event no longer pending).
//   - ConsumerRedelivered: an event whose ack was answered with success is delivered again by
//     a fetch later in the log, pending again at a later index, or dead-lettered.
//   - ConsumerKeyOrder: an event of key K is delivered while an earlier event of K is pending
//     (delivered and not acknowledged, or waiting): in one member's state (only the head of a
//     key's pending events may have an attempt), or across the log (a delivery at index i of
//     an event whose predecessor of the same key some member still held pending at i or later).
//   - ConsumerDelivery: a delivery or a pending event that is not in the event stream as
//     published, or that the consumer does not select; a dead-letter event that does not stand
//     for a selected event of the stream, as it was published.
//   - ConsumerSkipped: at the end, after the faults stop and the consumers are drained, a
//     selected event that is neither pending nor after next, and that no ack applied in the
//     log named and no dead letter stands for: the store let it go unacknowledged
//     (at-least-once).
//
// Answers the client never saw (the proposer crashed, the answer was lost) are judged through
// the state: what they did is in every member's store.

// Kinds of violation of the consumer checks.
const (
	ConsumerPosition    Kind = "consumer-position"
	ConsumerState       Kind = "consumer-state"
	ConsumerRedelivered Kind = "consumer-redelivered"
	ConsumerKeyOrder    Kind = "consumer-key-order"
	ConsumerDelivery    Kind = "consumer-delivery"
	ConsumerSkipped     Kind = "consumer-skipped"
)

// evPos is an event's position in the stream.
type evPos struct {
	rev int64
	idx int32
}

func (p evPos) less(q evPos) bool { return p.rev < q.rev || p.rev == q.rev && p.idx < q.idx }
func (p evPos) String() string    { return fmt.Sprintf("%d.%d", p.rev, p.idx) }

// posRec is a consumer's position at an applied index, as a member held it.
type posRec struct {
	index       uint64
	exists      bool
	floor, next evPos
	member      raft.NodeID
}

// keyTrack is what the checker knows of one key's events of a consumer, for the ordering check.
type keyTrack struct {
	// pending: the highest applied index at which some member held each event pending.
	pending   []pendSeen
	pendingAt map[evPos]int
	// delivered: deliveries, at the index of the fetch that made them (or the first index at
	// which a member's state showed them out).
	delivered []delivSeen
}

type pendSeen struct {
	pos    evPos
	index  uint64
	member raft.NodeID
}

type delivSeen struct {
	pos   evPos
	index uint64
	what  string
}

// simConsumer is one consumer of the workload and what is known of it.
type simConsumer struct {
	name   string
	cfg    *logpb.ConsumerConfig // as created (defaults filled in by the store)
	filter mvcc.EventFilter
	// created: a create was answered with success.
	created bool
	// positions by applied index (the monotonicity check).
	positions []posRec
	// acked holds the events whose ack was answered with success, with the ack's index.
	acked map[evPos]uint64
	// ackApplied holds the events some member applied an ack naming (outcome maybe unknown).
	ackApplied map[evPos]bool
	// deliveredAt holds, per event, the highest fetch index that delivered it (answers).
	deliveredAt map[evPos]uint64
	// dead holds the stream position of each event's dead letter.
	dead map[evPos]int
	keys map[string]*keyTrack
	// unverified are deliveries whose events no member had checked into the stream when they
	// were answered; final checks them.
	unverified []*logpb.Delivery
}

func newSimConsumer(cfg *logpb.ConsumerConfig) *simConsumer {
	f, err := mvcc.NewEventFilter(cfg.Topics)
	if err != nil {
		panic(err)
	}
	return &simConsumer{name: cfg.Name, cfg: mvcc.ConsumerDefaults(cfg), filter: f, acked: map[evPos]uint64{},
		ackApplied: map[evPos]bool{}, deliveredAt: map[evPos]uint64{}, dead: map[evPos]int{}, keys: map[string]*keyTrack{}}
}

func (sc *simConsumer) key(k []byte) *keyTrack {
	t := sc.keys[string(k)]
	if t == nil {
		t = &keyTrack{pendingAt: map[evPos]int{}}
		sc.keys[string(k)] = t
	}
	return t
}

type consumerCheck struct {
	r       *nodeRun
	evs     *eventCheck
	cons    []*simConsumer
	byName  map[string]*simConsumer
	digests map[uint64]digestRec
}

func newConsumerCheck(r *nodeRun, evs *eventCheck, cfgs ...*logpb.ConsumerConfig) *consumerCheck {
	c := &consumerCheck{r: r, evs: evs, byName: map[string]*simConsumer{}, digests: map[uint64]digestRec{}}
	for _, cfg := range cfgs {
		sc := newSimConsumer(cfg)
		c.cons = append(c.cons, sc)
		c.byName[sc.name] = sc
	}
	return c
}

// streamAt finds the event at position p in the canonical stream.
func (c *eventCheck) streamAt(p evPos) (int, bool) {
	k := sort.Search(len(c.stream), func(i int) bool {
		e := c.stream[i].ev
		return !(evPos{e.Revision, e.Index}).less(p)
	})
	if k < len(c.stream) && c.stream[k].ev.Revision == p.rev && c.stream[k].ev.Index == p.idx {
		return k, true
	}
	return k, false
}

// progress is what a member's committed store holds of the workload's consumers (rec nil:
// no such consumer), by c.cons.
type progress []struct {
	rec     *logpb.ConsumerRecord
	pending []mvcc.PendingDelivery
}

// read reads member id's committed consumers at applied index a and compares them with every
// other member's at a (before the event stream checks, so that a divergence is named as the
// consumers').
func (c *consumerCheck) read(id raft.NodeID, st *mvcc.Store, a uint64) progress {
	c.r.st.ConsumerStates++
	out := make(progress, len(c.cons))
	h := mix64(a)
	for i, sc := range c.cons {
		rec, pending, err := st.ConsumerProgress(sc.name)
		switch {
		case errors.Is(err, mvcc.ErrConsumerNotFound):
			rec, pending = nil, nil
		case err != nil:
			c.r.fail(StorageFault, "node %d: reading consumer %q: %v", id, sc.name, err)
		}
		out[i].rec, out[i].pending = rec, pending
		h = mix64(h ^ digestConsumer(c.r, rec, pending))
	}
	c.compare(id, a, h)
	return out
}

// compare records or compares the digest h of member id's consumers at applied index a.
func (c *consumerCheck) compare(id raft.NodeID, a uint64, h uint64) {
	d, ok := c.digests[a]
	switch {
	case !ok:
		c.digests[a] = digestRec{digest: h, member: id}
	case d.digest != h:
		c.r.fail(ConsumerState, "node %d's consumers at applied index %d differ from those node %d had there (records or pending events)", id, a, d.member)
	}
}

// digestConsumer digests a consumer's record and pending events.
func digestConsumer(r *nodeRun, rec *logpb.ConsumerRecord, pending []mvcc.PendingDelivery) uint64 {
	h := mix64(0xc0)
	if rec != nil {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		if err != nil {
			r.fail(CoreContract, "encoding consumer %q: %v", rec.GetConfig().GetName(), err)
		}
		h = foldBytes(h, b)
	}
	for _, p := range pending {
		h = mix64(h ^ uint64(p.Revision))
		h = mix64(h ^ uint64(p.Index))
		h = mix64(h ^ uint64(p.Attempt))
		h = mix64(h ^ uint64(p.Deadline))
		h = foldBytes(h, p.Key)
	}
	return h
}

// check checks member id's consumers read at applied index a, once its event stream is
// checked (the canonical stream then holds every event it holds).
func (c *consumerCheck) check(id raft.NodeID, a uint64, prog progress) {
	for i, sc := range c.cons {
		c.state(id, a, sc, prog[i].rec, prog[i].pending)
	}
}

// state checks one consumer's committed state on member id at applied index a (rec nil: the
// member has no such consumer).
func (c *consumerCheck) state(id raft.NodeID, a uint64, sc *simConsumer, rec *logpb.ConsumerRecord, pending []mvcc.PendingDelivery) {
	r := c.r
	pr := posRec{index: a, exists: rec != nil, member: id}
	if rec != nil {
		pr.floor, pr.next = evPos{rec.AckFloorRevision, rec.AckFloorIndex}, evPos{rec.NextRevision, rec.NextIndex}
	}
	c.position(sc, pr)
	// Per key: only the head of its pending events may be out.
	var heads map[string]evPos
	for i, p := range pending {
		pos := evPos{p.Revision, p.Index}
		if i > 0 && !(evPos{pending[i-1].Revision, pending[i-1].Index}).less(pos) {
			r.fail(ConsumerState, "node %d (applied %d): consumer %q lists pending event %s after %d.%d", id, a, sc.name, pos, pending[i-1].Revision, pending[i-1].Index)
		}
		if pos.less(pr.floor) || !pos.less(pr.next) {
			r.fail(ConsumerState, "node %d (applied %d): consumer %q holds event %s pending outside [ack floor %s, next %s)", id, a, sc.name, pos, pr.floor, pr.next)
		}
		if j, ok := sc.acked[pos]; ok && j <= a {
			r.fail(ConsumerRedelivered, "node %d (applied %d): consumer %q holds event %s pending (attempt %d), but its ack at index %d was answered with success",
				id, a, sc.name, pos, p.Attempt, j)
		}
		c.checkSelected(sc, pos, p.Key, fmt.Sprintf("node %d (applied %d): pending event", id, a))
		if len(p.Key) == 0 {
			continue
		}
		if heads == nil {
			heads = map[string]evPos{}
		}
		head, seen := heads[string(p.Key)]
		if !seen {
			heads[string(p.Key)] = pos
		} else if p.Attempt > 0 {
			r.fail(ConsumerKeyOrder, "node %d (applied %d): consumer %q has event %s of key %q out (attempt %d) while %s of that key is pending",
				id, a, sc.name, pos, p.Key, p.Attempt, head)
		}
		kt := sc.key(p.Key)
		c.pendingSeen(sc, kt, pos, p.Key, a, id)
		if p.Attempt > 0 {
			c.deliveredSeen(sc, kt, pos, p.Key, a, fmt.Sprintf("out (attempt %d) on node %d at applied index %d", p.Attempt, id, a))
		}
	}
}

func foldBytes(h uint64, b []byte) uint64 {
	h = mix64(h ^ uint64(len(b)))
	for _, x := range b {
		h = (h ^ uint64(x)) * 1099511628211
	}
	return h
}

// position records a consumer's position at an applied index and checks it against the
// positions at the nearest lower and higher indexes seen.
func (c *consumerCheck) position(sc *simConsumer, p posRec) {
	ps := sc.positions
	k := sort.Search(len(ps), func(i int) bool { return ps[i].index >= p.index })
	if k < len(ps) && ps[k].index == p.index {
		return // the same index: the digest compares it
	}
	check := func(lo, hi posRec) {
		switch {
		case lo.exists && !hi.exists:
			c.r.fail(ConsumerPosition, "consumer %q: node %d held it at applied index %d, node %d has none at %d", sc.name, lo.member, lo.index, hi.member, hi.index)
		case lo.exists && (hi.floor.less(lo.floor) || hi.next.less(lo.next)):
			c.r.fail(ConsumerPosition, "consumer %q went back: node %d had ack floor %s, next %s at applied index %d; node %d has ack floor %s, next %s at %d",
				sc.name, lo.member, lo.floor, lo.next, lo.index, hi.member, hi.floor, hi.next, hi.index)
		}
	}
	if k > 0 {
		check(ps[k-1], p)
	}
	if k < len(ps) {
		check(p, ps[k])
	}
	sc.positions = append(ps, posRec{})
	copy(sc.positions[k+1:], sc.positions[k:])
	sc.positions[k] = p
}

// pendingSeen records that a member held event pos of key pending at applied index a, and
// checks that no later event of the key was delivered at or before a.
func (c *consumerCheck) pendingSeen(sc *simConsumer, kt *keyTrack, pos evPos, key []byte, a uint64, id raft.NodeID) {
	if i, ok := kt.pendingAt[pos]; ok {
		if kt.pending[i].index >= a {
			return
		}
		kt.pending[i].index, kt.pending[i].member = a, id
	} else {
		kt.pendingAt[pos] = len(kt.pending)
		kt.pending = append(kt.pending, pendSeen{pos: pos, index: a, member: id})
	}
	for _, d := range kt.delivered {
		if pos.less(d.pos) && d.index <= a {
			c.r.fail(ConsumerKeyOrder, "consumer %q: event %s of key %q was delivered at index %d (%s), but the earlier %s of that key was pending on node %d at applied index %d",
				sc.name, d.pos, key, d.index, d.what, pos, id, a)
		}
	}
}

// deliveredSeen records a delivery of event pos of key at index i, and checks that no earlier
// event of the key was pending at i or later.
func (c *consumerCheck) deliveredSeen(sc *simConsumer, kt *keyTrack, pos evPos, key []byte, i uint64, what string) {
	for _, p := range kt.pending {
		if p.pos.less(pos) && p.index >= i {
			c.r.fail(ConsumerKeyOrder, "consumer %q: event %s of key %q was delivered at index %d (%s), but the earlier %s of that key was pending on node %d at applied index %d",
				sc.name, pos, key, i, what, p.pos, p.member, p.index)
		}
	}
	kt.delivered = append(kt.delivered, delivSeen{pos: pos, index: i, what: what})
}

// checkSelected checks that the event at pos (with key) is in the canonical stream and
// selected by the consumer.
func (c *consumerCheck) checkSelected(sc *simConsumer, pos evPos, key []byte, what string) {
	k, ok := c.evs.streamAt(pos)
	if !ok {
		c.r.fail(ConsumerDelivery, "consumer %q: %s %s is not in the event stream (%d events)", sc.name, what, pos, len(c.evs.stream))
	}
	e := c.evs.stream[k].ev
	if !sc.filter.Match(e.Topic) || c.evs.stream[k].op == nil {
		c.r.fail(ConsumerDelivery, "consumer %q (topics %v): %s %s, which it does not select", sc.name, sc.cfg.Topics, what, formatEvent(e))
	}
	if !bytes.Equal(key, e.Key) {
		c.r.fail(ConsumerDelivery, "consumer %q: %s %s with key %q, but the stream holds %s", sc.name, what, pos, key, formatEvent(e))
	}
}

// fetched checks the deliveries of a fetch of consumer sc answered by member id, applied at
// index i.
func (c *consumerCheck) fetched(id raft.NodeID, sc *simConsumer, i uint64, ds []*logpb.Delivery) {
	for _, d := range ds {
		e := d.GetEvent()
		pos := evPos{e.GetRevision(), e.GetIndex()}
		if j, ok := sc.acked[pos]; ok && j < i {
			c.r.fail(ConsumerRedelivered, "n%d: consumer %q delivered %s (attempt %d) by the fetch at index %d, but its ack at index %d was answered with success",
				id, sc.name, formatEvent(e), d.Attempt, i, j)
		}
		sc.deliveredAt[pos] = max(sc.deliveredAt[pos], i)
		c.checkDelivery(sc, d)
		if len(e.GetKey()) > 0 {
			c.deliveredSeen(sc, sc.key(e.Key), pos, e.Key, i, fmt.Sprintf("attempt %d, answered by node %d", d.Attempt, id))
		}
	}
}

// checkDelivery checks a delivered event against the canonical stream, or keeps it for the
// end if no member has checked its position in yet.
func (c *consumerCheck) checkDelivery(sc *simConsumer, d *logpb.Delivery) {
	e := d.GetEvent()
	k, ok := c.evs.streamAt(evPos{e.GetRevision(), e.GetIndex()})
	if !ok {
		if k == len(c.evs.stream) {
			sc.unverified = append(sc.unverified, d)
			return
		}
		c.r.fail(ConsumerDelivery, "consumer %q delivered %s, which is not in the event stream", sc.name, formatEvent(e))
	}
	g := c.evs.stream[k]
	switch {
	case !proto.Equal(g.ev, e):
		c.r.fail(ConsumerDelivery, "consumer %q delivered %s, but the stream holds %s there", sc.name, formatEvent(e), formatEvent(g.ev))
	case g.op == nil || !sc.filter.Match(e.Topic):
		c.r.fail(ConsumerDelivery, "consumer %q (topics %v) delivered %s, which it does not select", sc.name, sc.cfg.Topics, formatEvent(e))
	case d.Attempt < 1 || d.Attempt > sc.cfg.MaxDeliver:
		c.r.fail(ConsumerDelivery, "consumer %q delivered %s as attempt %d (max deliver %d)", sc.name, formatEvent(e), d.Attempt, sc.cfg.MaxDeliver)
	}
}

// ackedOK records an ack of consumer sc answered with success, applied at index j.
func (c *consumerCheck) ackedOK(id raft.NodeID, sc *simConsumer, j uint64, acks []*logpb.EventPosition) {
	for _, p := range acks {
		pos := evPos{p.Revision, p.Index}
		if i := sc.deliveredAt[pos]; i > j {
			c.r.fail(ConsumerRedelivered, "n%d: consumer %q: the ack of %s (attempt %d) at index %d was answered with success, but a fetch at index %d delivered it again",
				id, sc.name, pos, p.Attempt, j, i)
		}
		if k, ok := sc.dead[pos]; ok {
			c.r.fail(ConsumerRedelivered, "n%d: consumer %q: the ack of %s at index %d was answered with success, but it was dead-lettered (%s)",
				id, sc.name, pos, j, c.evs.pos(k))
		}
		if old, ok := sc.acked[pos]; !ok || j < old {
			sc.acked[pos] = j
		}
	}
}

// deadLetter checks a dead-letter event read from member id's store, at stream position k.
func (c *consumerCheck) deadLetter(id raft.NodeID, e *logpb.Event, k int) {
	r := c.r
	sc := c.byName[e.Headers[mvcc.HeaderDeadLetterConsumer]]
	if sc == nil || e.Topic != sc.cfg.DeadLetterTopic {
		r.fail(ConsumerDelivery, "node %d holds dead letter %s at stream position %d, of no consumer of the workload", id, formatEvent(e), k)
	}
	var pos evPos
	f := strings.Split(e.Headers[mvcc.HeaderOriginalPosition], ".")
	rev, err1 := strconv.ParseInt(f[0], 10, 64)
	var idx int64
	var err2 error
	if len(f) == 2 {
		idx, err2 = strconv.ParseInt(f[1], 10, 32)
	}
	if len(f) != 2 || err1 != nil || err2 != nil {
		r.fail(ConsumerDelivery, "node %d holds dead letter %s naming no position", id, formatEvent(e))
	}
	pos = evPos{rev, int32(idx)}
	ok := false
	var orig *logpb.Event
	if j, found := c.evs.streamAt(pos); found {
		orig, ok = c.evs.stream[j].ev, c.evs.stream[j].op != nil
	}
	if !ok || !sc.filter.Match(orig.Topic) || !bytes.Equal(orig.Payload, e.Payload) || !bytes.Equal(orig.Key, e.Key) ||
		e.Headers[mvcc.HeaderOriginalTopic] != orig.Topic || e.Headers[mvcc.HeaderOriginalID] != orig.Id ||
		e.Headers[mvcc.HeaderAttempts] != strconv.Itoa(int(sc.cfg.MaxDeliver)) {
		r.fail(ConsumerDelivery, "node %d holds dead letter %s of consumer %q, which stands for no selected event of the stream as published (%s: %v)",
			id, formatEvent(e), sc.name, pos, orig)
	}
	for hk, hv := range orig.Headers {
		if e.Headers[hk] != hv {
			r.fail(ConsumerDelivery, "node %d holds dead letter %s without header %q=%q of the original %s", id, formatEvent(e), hk, hv, formatEvent(orig))
		}
	}
	if prev, dup := sc.dead[pos]; dup {
		r.fail(EventDuplicate, "node %d holds a second dead letter of %s for consumer %q at %s (the first at %s)", id, pos, sc.name, formatEvent(e), c.evs.pos(prev))
	}
	if j, ok := sc.acked[pos]; ok {
		r.fail(ConsumerRedelivered, "node %d holds dead letter %s of consumer %q, but the ack of %s at index %d was answered with success", id, formatEvent(e), sc.name, pos, j)
	}
	sc.dead[pos] = k
}

// ackApplied records the events an ack command names, as some member applies it.
func (c *consumerCheck) ackApplied(a *logpb.AckRequest) {
	if sc := c.byName[a.GetConsumer()]; sc != nil {
		for _, p := range a.GetAcks() {
			sc.ackApplied[evPos{p.Revision, p.Index}] = true
		}
	}
}

// final checks, once the consumers are drained, the deliveries answered before their events
// were checked into the stream, and that no selected event was skipped: each is acknowledged
// (an applied ack named it), dead-lettered, pending, or at or after next in the state rec,
// pending of a member that applied everything.
func (c *consumerCheck) final(sc *simConsumer, rec *logpb.ConsumerRecord, pending []mvcc.PendingDelivery) {
	for _, d := range sc.unverified {
		c.checkDelivery(sc, d)
		if _, ok := c.evs.streamAt(evPos{d.Event.Revision, d.Event.Index}); !ok {
			c.r.fail(ConsumerDelivery, "consumer %q delivered %s, which is not in the event stream", sc.name, formatEvent(d.Event))
		}
	}
	sc.unverified = nil
	if rec == nil {
		return
	}
	held := make(map[evPos]bool, len(pending))
	for _, p := range pending {
		held[evPos{p.Revision, p.Index}] = true
	}
	start := evPos{rec.CreatedRevision + 1, 0}
	if sc.cfg.StartRevision > 0 {
		start = evPos{sc.cfg.StartRevision, 0}
	}
	next := evPos{rec.NextRevision, rec.NextIndex}
	for _, g := range c.evs.stream {
		pos := evPos{g.ev.Revision, g.ev.Index}
		if g.op == nil || pos.less(start) || !sc.filter.Match(g.ev.Topic) || !pos.less(next) {
			continue
		}
		_, dead := sc.dead[pos]
		if !held[pos] && !dead && !sc.ackApplied[pos] {
			c.r.fail(ConsumerSkipped, "consumer %q (next %s, ack floor %d.%d) let go of %s: no ack named it, no dead letter stands for it, and it is not pending",
				sc.name, next, rec.AckFloorRevision, rec.AckFloorIndex, formatEvent(g.ev))
		}
	}
}
