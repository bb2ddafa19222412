package sim

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// The event stream checks under SMFSM: the transactional outbox (internal/mvcc/events.go)
// must give every member the same stream, holding the events of every write that took effect
// exactly once, at the write's revision, in log order, whatever crashes, power losses,
// partitions, snapshots and leader changes happen.
//
// The checker keeps one canonical stream, built from what members' stores hold: every time a
// member commits (and when it starts or installs a snapshot), the events its store added since
// its last check are read (mvcc.Store.Events) and compared one by one with the canonical
// stream at the same position, which grows when a member reads past its end. What is appended
// is checked against the workload's model of every write (evOp): its payload names the write,
// its branch and its place among the write's events. The checks, by Kind:
//
//   - EventStream: two members hold different events at one position (position, id, topic,
//     key, payload, headers, time); an event no write published, or not as published; a gap,
//     a repeat or a step back in the (revision, index) numbering; one revision holding events
//     of two writes, or part of a write's events; a member that applied a write (its applied
//     index is at or past the write's index) without its events, or holding events of a write
//     it has not applied; a write answered otherwise than the model says (refused though
//     valid, accepted though invalid).
//   - EventLost: an acknowledged write whose events are not in the stream at the end of the
//     run, or not as its answer said (branch, ids, revision).
//   - EventDuplicate: a write's events twice in the stream.
//   - EventOrder: a write's events after those of a write later in the log: revisions follow
//     log order, so that, per key, events are in the order their writes committed.
//   - EventOfFailedWrite: events of a write that failed with a definite error: refused by the
//     store, or failed by the node as certainly not applied (node.ProposalLost).
//
// Writes whose outcome the client never learned (the proposer crashed, the answer was lost)
// may or may not be in the stream, but only whole and once. A member that lost its store in a
// power loss restarts its check from the beginning of the stream, so nothing it held before
// the crash is trusted: what it rebuilds is compared again.

// Kinds of violation of the event stream checks.
const (
	EventStream        Kind = "event-stream"
	EventLost          Kind = "event-lost"
	EventDuplicate     Kind = "event-duplicate"
	EventOrder         Kind = "event-order"
	EventOfFailedWrite Kind = "event-of-failed-write"
)

// evOp is one write of the workload, as proposed, and what is known of its outcome.
type evOp struct {
	id       uint64
	proposer raft.NodeID
	kind     string // put, publish, txn
	time     int64  // the command's time: every event it publishes carries it
	key      string // the key it writes ("" for a publish)
	// branches are the events the write publishes: [0] for a put or a publish, or a
	// transaction's success branch, [1] its failure branch; writes says which write key.
	branches [2][]*logpb.Event
	writes   [2]bool
	// invalid: built to be refused by the store (an event with an invalid topic).
	invalid bool

	// index is the log index of its first application anywhere (0: not applied yet).
	index uint64
	// The answer its proposer received, if any.
	acked   bool
	refused bool // answered with the store's (deterministic) error
	lost    bool // failed as certainly not applied
	branch  int  // the branch that ran (acked and not refused)
	ids     []string
	rev     int64
	// at is the stream position of its first event (-1: none seen), of branch atBranch.
	at, atBranch int
}

func (op *evOp) String() string {
	if op == nil {
		return "<unknown write>"
	}
	invalid := ""
	if op.invalid {
		invalid = ", invalid"
	}
	return fmt.Sprintf("%s %d of %q by n%d (events %d/%d%s)", op.kind, op.id, op.key, op.proposer,
		len(op.branches[0]), len(op.branches[1]), invalid)
}

// streamEv is one event of the canonical stream.
type streamEv struct {
	ev     *logpb.Event
	op     *evOp
	branch int
	j      int         // its place among the events of its write's branch
	member raft.NodeID // the member whose store it was first read from
}

// memberStream is how far a member's store has been checked: the first seen events of the
// canonical stream, up to the position after (rev, index).
type memberStream struct {
	seen  int
	rev   int64
	index int32
}

type digestRec struct {
	digest uint64
	member raft.NodeID
}

type eventCheck struct {
	r      *nodeRun
	filter mvcc.EventFilter
	ops    map[uint64]*evOp
	order  []*evOp // by id
	stream []streamEv
	// byPayload maps an event's payload (unique per event of the workload) to its position.
	byPayload map[string]int
	digests   map[uint64]digestRec
	// lastWrite is, per register, the log index of the newest acknowledged write of it.
	lastWrite map[string]uint64
	// lastWriteAt is the stream position of the last event of a write (not a dead letter); -1:
	// none yet.
	lastWriteAt int
}

// appendDeadLetter checks a dead letter (the event a consumer fetch publishes for an event
// past its last attempt, consumercheck.go) read from member id's store past the end of the
// canonical stream, and appends it. The dead letters of one fetch are numbered from 0 at its
// revision, which is a revision of their own.
func (c *eventCheck) appendDeadLetter(id raft.NodeID, e *logpb.Event) {
	r, k := c.r, len(c.stream)
	if k > 0 {
		p := c.stream[k-1]
		switch {
		case e.Revision == p.ev.Revision && (p.op != nil || e.Index != p.ev.Index+1):
			r.fail(EventStream, "node %d holds dead letter %s right after %s at the same revision", id, formatEvent(e), formatEvent(p.ev))
		case e.Revision < p.ev.Revision:
			r.fail(EventStream, "node %d holds %s after %s: the revision goes back", id, formatEvent(e), formatEvent(p.ev))
		case e.Revision > p.ev.Revision && p.op != nil && p.j != len(p.op.branches[p.branch])-1:
			r.fail(EventStream, "node %d holds %s after only %d of the %d events of %s", id, formatEvent(e), p.j+1, len(p.op.branches[p.branch]), p.op)
		case e.Revision > p.ev.Revision && e.Index != 0:
			r.fail(EventStream, "node %d holds dead letter %s first at its revision", id, formatEvent(e))
		}
	}
	if e.Id != mvcc.EventID(e.Revision, e.Index) {
		r.fail(EventStream, "node %d holds dead letter %s, not named by its position", id, formatEvent(e))
	}
	r.cons.deadLetter(id, e, k)
	c.stream = append(c.stream, streamEv{ev: proto.CloneOf(e), member: id})
}

func newEventCheck(r *nodeRun) *eventCheck {
	f, err := mvcc.NewEventFilter([]string{"*"})
	if err != nil {
		panic(err)
	}
	return &eventCheck{r: r, filter: f, ops: map[uint64]*evOp{}, byPayload: map[string]int{},
		digests: map[uint64]digestRec{}, lastWrite: map[string]uint64{}, lastWriteAt: -1}
}

func (c *eventCheck) add(op *evOp) {
	op.at = -1
	c.ops[op.id] = op
	c.order = append(c.order, op)
}

// eventPayload names event j of branch b of write id; parsePayload is its inverse.
func eventPayload(id uint64, b, j int) []byte { return fmt.Appendf(nil, "%d/%d/%d", id, b, j) }

func parsePayload(p []byte) (id uint64, b, j int, ok bool) {
	f := strings.Split(string(p), "/")
	if len(f) != 3 {
		return 0, 0, 0, false
	}
	id, err1 := strconv.ParseUint(f[0], 10, 64)
	b, err2 := strconv.Atoi(f[1])
	j, err3 := strconv.Atoi(f[2])
	return id, b, j, err1 == nil && err2 == nil && err3 == nil && b >= 0 && b < 2 && j >= 0
}

// appliedAt records that write id was applied at index.
func (c *eventCheck) appliedAt(id, index uint64) {
	if op := c.ops[id]; op != nil && (op.index == 0 || index < op.index) {
		op.index = index
	}
}

// lost records that write id failed as certainly not applied.
func (c *eventCheck) lost(id uint64) {
	op := c.ops[id]
	if op == nil {
		return
	}
	op.lost = true
	if op.at >= 0 {
		c.r.fail(EventOfFailedWrite, "%s was failed as certainly not applied, but its events are in the stream at %s", op, c.pos(op.at))
	}
}

// answered records the answer member m's node gave for write id, applied at index.
func (c *eventCheck) answered(m raft.NodeID, id, index uint64, res mvcc.Result) {
	r, op := c.r, c.ops[id]
	if op == nil {
		return
	}
	if res.Err != nil {
		op.acked, op.refused = true, true
		if !op.invalid {
			r.fail(EventStream, "n%d: %s was refused: %v", m, op, res.Err)
		}
		if op.at >= 0 {
			r.fail(EventOfFailedWrite, "%s was refused (%v), but its events are in the stream at %s", op, res.Err, c.pos(op.at))
		}
		return
	}
	if op.invalid {
		r.fail(EventStream, "n%d: %s carries an invalid event but was accepted", m, op)
	}
	var ids []string
	b := 0
	switch resp := res.Resp.(type) {
	case *logpb.PutResponse:
		ids, op.rev = resp.EventIds, resp.GetHeader().GetRevision()
	case *logpb.PublishResponse:
		ids, op.rev = resp.EventIds, resp.GetHeader().GetRevision()
	case *logpb.TxnResponse:
		if !resp.Succeeded {
			b = 1
		}
		op.rev = resp.GetHeader().GetRevision()
		for _, o := range resp.Responses {
			switch n := o.GetResponse().(type) {
			case *logpb.ResponseOp_ResponsePut:
				ids = append(ids, n.ResponsePut.EventIds...)
			case *logpb.ResponseOp_ResponsePublish:
				ids = append(ids, n.ResponsePublish.EventIds...)
			}
		}
	default:
		r.fail(EventStream, "n%d: %s answered with %T", m, op, res.Resp)
	}
	op.acked, op.branch, op.ids = true, b, ids
	want := op.branches[b]
	if len(ids) != len(want) {
		r.fail(EventLost, "n%d: %s (index %d) published %d events but its answer names %d: %v", m, op, index, len(want), len(ids), ids)
	}
	for j, e := range want {
		if e.Id != "" && ids[j] != e.Id {
			r.fail(EventLost, "n%d: %s: event %d was published with id %q, its answer says %q", m, op, j, e.Id, ids[j])
		}
	}
	r.st.EventsAcked += int64(len(want))
	if op.writes[b] {
		c.lastWrite[op.key] = max(c.lastWrite[op.key], op.index)
	}
	if op.at >= 0 {
		for j := range want {
			c.checkAnswered(op.at+j, op, b, j)
		}
	}
}

// checkAnswered checks the event at stream position k, event j of branch b of acknowledged
// write op, against the answer.
func (c *eventCheck) checkAnswered(k int, op *evOp, b, j int) {
	e := c.stream[k].ev
	switch {
	case b != op.branch:
		c.r.fail(EventLost, "%s answered that branch %d ran, but the stream holds branch %d's events at %s", op, op.branch, b, c.pos(k))
	case j >= len(op.ids) || e.Id != op.ids[j]:
		c.r.fail(EventLost, "%s answered event ids %v, but the stream holds id %q at %s", op, op.ids, e.Id, c.pos(k))
	case e.Revision != op.rev:
		c.r.fail(EventLost, "%s answered revision %d, but its events are at %s", op, op.rev, c.pos(k))
	}
}

func (c *eventCheck) pos(k int) string {
	if k < 0 || k >= len(c.stream) {
		return fmt.Sprintf("#%d", k)
	}
	e := c.stream[k].ev
	return fmt.Sprintf("#%d (%d.%d)", k, e.Revision, e.Index)
}

func formatEvent(e *logpb.Event) string {
	return fmt.Sprintf("{%d.%d id=%q topic=%q key=%q payload=%q headers=%v time=%d}", e.Revision, e.Index, e.Id, e.Topic, e.Key, e.Payload, e.Headers, e.TimeUnixNano)
}

// digestAt records or compares the digest of member id's committed store at applied index a.
// A snapshot's index (strict) must have been reached by some member.
func (c *eventCheck) digestAt(id raft.NodeID, st *mvcc.Store, a uint64, strict bool) {
	d, err := storeDigest(st)
	if err != nil {
		c.r.fail(StorageFault, "node %d: reading its state machine: %v", id, err)
	}
	rec, ok := c.digests[a]
	switch {
	case !ok && strict:
		c.r.fail(StateMachineSafety, "node %d installed a snapshot at index %d that no state machine ever reached", id, a)
	case !ok:
		c.digests[a] = digestRec{digest: d, member: id}
	case rec.digest != d:
		c.r.fail(StateMachineSafety, "node %d's store at applied index %d differs from the one node %d had there (keys, revisions or members)", id, a, rec.member)
	}
}

// storeDigest digests what a store's committed state answers: its revision, live keys and
// membership table.
func storeDigest(st *mvcc.Store) (uint64, error) {
	resp, err := st.Range(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		return 0, err
	}
	h := mix64(uint64(resp.GetHeader().GetRevision()))
	fold := func(b []byte) {
		h = mix64(h ^ uint64(len(b)))
		for _, x := range b {
			h = (h ^ uint64(x)) * 1099511628211
		}
	}
	for _, kv := range resp.Kvs {
		fold(kv.Key)
		fold(kv.Value)
		h = mix64(h ^ uint64(kv.CreateRevision))
		h = mix64(h ^ uint64(kv.ModRevision))
		h = mix64(h ^ uint64(kv.Version))
		h = mix64(h ^ uint64(kv.Lease))
	}
	for _, m := range st.Members() {
		h = mix64(h ^ m.ID)
		fold([]byte(m.Name))
		if m.IsLearner {
			h = mix64(h ^ 1)
		}
	}
	return h, nil
}

// read checks the events member sm's committed store added since its last check.
func (c *eventCheck) read(sm *fsmSM) {
	r, id, ms := c.r, sm.m.id, &sm.stream
	st := sm.f.Store()
	applied := st.AppliedIndex()
	from := ms.rev
	if from == 0 {
		from = 1
	}
	evs, _, err := st.Events(from, ms.index, math.MaxInt32, c.filter)
	if err != nil {
		r.fail(StorageFault, "node %d: reading its event stream from %d.%d: %v", id, from, ms.index, err)
	}
	for _, e := range evs {
		k := ms.seen
		if k < len(c.stream) {
			if g := c.stream[k]; !proto.Equal(g.ev, e) {
				r.fail(EventStream, "node %d (applied %d) holds %s at stream position %d, node %d holds %s (%s)",
					id, applied, formatEvent(e), k, g.member, formatEvent(g.ev), g.op)
			}
		} else {
			c.append(id, applied, e)
		}
		ms.seen++
		ms.rev, ms.index = e.Revision, e.Index+1
	}
	r.st.EventsChecked += int64(len(evs))
	r.ev(0xe6, uint64(id), applied, uint64(ms.seen))
	if ms.seen > 0 {
		if g := c.stream[ms.seen-1]; g.op != nil && g.j != len(g.op.branches[g.branch])-1 {
			r.fail(EventStream, "node %d (applied %d) holds only %d of the %d events of %s", id, applied, g.j+1, len(g.op.branches[g.branch]), g.op)
		}
		if g := c.stream[ms.seen-1]; g.op != nil && g.op.index > applied {
			r.fail(EventStream, "node %d (applied %d) holds events of %s, applied at %d", id, applied, g.op, g.op.index)
		}
	}
	if ms.seen < len(c.stream) {
		if g := c.stream[ms.seen]; g.op != nil && g.op.index <= applied {
			r.fail(EventStream, "node %d applied through %d, but its stream ends at position %d, without %s of %s (applied at %d)",
				id, applied, ms.seen, formatEvent(g.ev), g.op, g.op.index)
		}
	}
}

// append checks event e, read from member id's store (applied through applied), past the end
// of the canonical stream, and appends it.
func (c *eventCheck) append(id raft.NodeID, applied uint64, e *logpb.Event) {
	r := c.r
	k := len(c.stream)
	if _, dead := e.Headers[mvcc.HeaderDeadLetterConsumer]; dead && r.cons != nil {
		c.appendDeadLetter(id, e)
		return
	}
	opID, b, j, ok := parsePayload(e.Payload)
	op := c.ops[opID]
	if !ok || op == nil || j >= len(op.branches[b]) {
		r.fail(EventStream, "node %d holds %s at stream position %d, which no write published", id, formatEvent(e), k)
	}
	want := op.branches[b][j]
	wantID := want.Id
	if wantID == "" {
		wantID = mvcc.EventID(e.Revision, e.Index)
	}
	if e.Topic != want.Topic || !bytes.Equal(e.Key, want.Key) || !maps.Equal(e.Headers, want.Headers) || e.Id != wantID ||
		e.TimeUnixNano != op.time {
		r.fail(EventStream, "node %d holds %s, but %s published event %d of branch %d as {id=%q topic=%q key=%q headers=%v} at time %d",
			id, formatEvent(e), op, j, b, want.Id, want.Topic, want.Key, want.Headers, op.time)
	}
	// Numbering: (revision, index) gap-free within a revision, one write per revision, each
	// write's events whole, numbered from 0.
	if e.Index != int32(j) {
		r.fail(EventStream, "node %d holds %s, event %d of %s, at index %d of its revision", id, formatEvent(e), j, op, e.Index)
	}
	if k > 0 {
		p := c.stream[k-1]
		switch {
		case e.Revision == p.ev.Revision && (p.op != op || p.branch != b || p.j != j-1):
			r.fail(EventStream, "node %d holds %s of %s right after %s of %s at the same revision", id, formatEvent(e), op, formatEvent(p.ev), p.op)
		case e.Revision < p.ev.Revision:
			r.fail(EventStream, "node %d holds %s after %s: the revision goes back", id, formatEvent(e), formatEvent(p.ev))
		case e.Revision > p.ev.Revision && p.op != nil && p.j != len(p.op.branches[p.branch])-1:
			r.fail(EventStream, "node %d holds %s after only %d of the %d events of %s", id, formatEvent(e), p.j+1, len(p.op.branches[p.branch]), p.op)
		}
	}
	// Exactly once.
	if prev, dup := c.byPayload[string(e.Payload)]; dup {
		r.fail(EventDuplicate, "node %d holds event %d of %s twice: at %s and at %s", id, j, op, c.pos(prev), formatEvent(e))
	}
	if j == 0 && op.at >= 0 {
		r.fail(EventDuplicate, "node %d holds the events of %s twice: from %s and from %s", id, op, c.pos(op.at), formatEvent(e))
	}
	// Only writes that took effect.
	switch {
	case op.lost:
		r.fail(EventOfFailedWrite, "node %d holds %s of %s, which was failed as certainly not applied", id, formatEvent(e), op)
	case op.refused:
		r.fail(EventOfFailedWrite, "node %d holds %s of %s, which was refused", id, formatEvent(e), op)
	case op.invalid:
		r.fail(EventOfFailedWrite, "node %d holds %s of %s, which carries an invalid event and must be refused", id, formatEvent(e), op)
	case op.index == 0 || op.index > applied:
		r.fail(EventStream, "node %d (applied %d) holds %s of %s, applied at %d", id, applied, formatEvent(e), op, op.index)
	}
	// Commit order: the writes' events follow the log, so each key's events follow the order
	// in which its writes committed.
	if c.lastWriteAt >= 0 {
		if p := c.stream[c.lastWriteAt]; p.op != op && op.index <= p.op.index {
			r.fail(EventOrder, "node %d holds %s of %s (index %d) after %s of %s (index %d)", id, formatEvent(e), op, op.index,
				formatEvent(p.ev), p.op, p.op.index)
		}
	}
	c.lastWriteAt = k
	c.stream = append(c.stream, streamEv{ev: proto.CloneOf(e), op: op, branch: b, j: j, member: id})
	c.byPayload[string(e.Payload)] = k
	if j == 0 {
		op.at, op.atBranch = k, b
	}
	if op.acked {
		c.checkAnswered(k, op, b, j)
	}
}

// checkRead checks a register read by a linearizable read on member m once answered: the
// value its store holds must come from a write that took effect, no older than the newest
// write of the register acknowledged before the read was requested.
func (c *eventCheck) checkRead(m *member, rd nodeRead) {
	r := c.r
	sm, ok := m.sm.(*fsmSM)
	if !ok {
		return
	}
	resp, err := sm.f.Store().Range(&logpb.RangeRequest{Key: []byte(rd.key)})
	if err != nil {
		r.fail(StorageFault, "node %d: reading %q: %v", m.id, rd.key, err)
	}
	r.st.RegisterReads++
	if len(resp.Kvs) == 0 {
		if rd.minKeyIndex > 0 {
			r.fail(Linearizability, "read of %q requested at tick %d on node %d found no value, but a write of it was acknowledged at index %d before the request",
				rd.key, rd.tick, m.id, rd.minKeyIndex)
		}
		return
	}
	val := string(resp.Kvs[0].Value)
	id, _, ok := parseWriteValue(val)
	op := c.ops[id]
	switch {
	case !ok || op == nil:
		r.fail(StateMachineSafety, "node %d: %q holds %q, which no write wrote", m.id, rd.key, val)
	case op.refused || op.lost:
		r.fail(Linearizability, "read of %q on node %d saw the value of %s, which failed", rd.key, m.id, op)
	case op.index < rd.minKeyIndex:
		r.fail(Linearizability, "read of %q requested at tick %d on node %d saw the value written at index %d, but a write of it was acknowledged at index %d before the request",
			rd.key, rd.tick, m.id, op.index, rd.minKeyIndex)
	}
}

// final runs once the cluster is live again after the faults: every live member's stream is
// checked once more, and every acknowledged write's events must be in the stream.
func (c *eventCheck) final() {
	r := c.r
	// A write acknowledged late may be applied but not yet committed everywhere: what no
	// live member's store has committed is not required yet.
	var committed uint64
	for _, m := range r.members[1:] {
		if sm, ok := m.sm.(*fsmSM); ok && m.up() {
			sm.checked = 0
			sm.checkpoint()
			committed = max(committed, sm.f.AppliedIndex())
		}
	}
	c.checkAcked(committed)
	r.st.EventsPublished += int64(len(c.stream))
}

// checkAcked checks that every acknowledged write applied at or below committed (some store
// committed it) has its events in the stream.
func (c *eventCheck) checkAcked(committed uint64) {
	for _, op := range c.order {
		if !op.acked || op.refused || len(op.branches[op.branch]) == 0 || op.index > committed {
			continue
		}
		if op.at < 0 {
			c.r.fail(EventLost, "%s was acknowledged (index %d, revision %d, event ids %v), but its events are in no member's stream",
				op, op.index, op.rev, op.ids)
		}
	}
}
