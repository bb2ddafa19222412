package sim

import (
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// The workload under SMFSM: the simulator's client writes become logpb.Command writes, stamped
// as fsm.Proposer stamps them (id, proposer, time, the log format version they need), that
// carry events. Every write writes its register the value memSM's writes would (naming the
// write), so reads can be related to writes, and has a session of its own (client id = the
// write's id, sequence 1): a proposal the network or a forwarding follower duplicates is then
// applied once, as the client package's sessions make a retried write, and a second copy of
// its events is a bug. (Such duplicates are common: without sessions, FSMBugs.SessionlessWrites,
// the duplicate check fires within a few seeds.)
//
//   - put (60%): the register, with 0 to 2 events; one put in 25 also carries an event with an
//     invalid topic, which the store must refuse, events and all.
//   - publish (15%): 1 or 2 events, no key.
//   - txn (25%): compares the register's version with a small number; one branch (drawn) puts
//     the register with 1 or 2 events, sometimes followed by a publish of one more, the other
//     does nothing, puts the register without events, or reads it.
//
// Events take a topic from a small set, the written key, a key of a small set or none, an id
// of their own or none (the store names them), sometimes a header, and a payload naming the
// write, the branch and their place (eventPayload), unique over the run. The liveness probe is
// a put without events.

var eventTopics = []string{"orders", "audit.log", "jobs/retry"}

// badTopic is not a valid topic (CheckTopic refuses the space).
const badTopic = "no spaces"

// fsmCommand builds write id of key at member m and registers it with the event checker.
func (r *nodeRun) fsmCommand(m *member, id uint64, key, tag string) []byte {
	rng := r.rng
	op := &evOp{id: id, proposer: m.id, key: key, time: r.epoch.Add(time.Duration(r.now) * nodeTick).UnixNano()}
	value := []byte(writeValue(id, m.id, tag))
	sess := &logpb.Session{ClientId: id, Sequence: 1}
	if r.o.FSMBugs.SessionlessWrites {
		sess = nil // planted bug: a duplicated proposal publishes twice
	}
	cmd := &logpb.Command{Id: id, Proposer: uint64(m.id), TimeUnixNano: op.time}
	events := func(b, n int) []*logpb.Event {
		evs := make([]*logpb.Event, 0, n)
		for range n {
			evs = append(evs, r.newEvent(op, b, len(op.branches[b])+len(evs), key))
		}
		op.branches[b] = append(op.branches[b], evs...)
		return evs
	}
	k := rng.IntN(20)
	switch {
	case tag == "probe" || k < 12:
		op.kind, op.writes[0] = "put", true
		put := &logpb.PutRequest{Key: []byte(key), Value: value, Session: sess}
		if tag != "probe" {
			put.Events = events(0, rng.IntN(3))
			if rng.IntN(25) == 0 {
				bad := r.newEvent(op, 0, len(op.branches[0]), key)
				bad.Topic = badTopic
				op.branches[0] = append(op.branches[0], bad)
				put.Events = append(put.Events, bad)
				op.invalid = true
				// With its session: the refusal is stored as the write's result (this once
				// failed the batch and stopped the member at the entry, on every start).
			}
		}
		cmd.Op = &logpb.Command_Put{Put: put}
	case k < 15:
		op.kind, op.key = "publish", ""
		cmd.Op = &logpb.Command_Publish{Publish: &logpb.PublishRequest{Events: events(0, 1+rng.IntN(2)), Session: sess}}
	default:
		op.kind = "txn"
		txn := &logpb.TxnRequest{Session: sess, Compare: []*logpb.Compare{{
			Key: []byte(key), Target: logpb.Compare_VERSION, Result: logpb.Compare_GREATER,
			TargetUnion: &logpb.Compare_Version{Version: int64(rng.IntN(3))},
		}}}
		withEvents := rng.IntN(2)
		for b := range 2 {
			var ops []*logpb.RequestOp
			if b == withEvents {
				op.writes[b] = true
				ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{
					Key: []byte(key), Value: value, Events: events(b, 1+rng.IntN(2))}}})
				if rng.IntN(2) == 0 {
					ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{
						Events: events(b, 1)}}})
				}
			} else {
				switch rng.IntN(3) {
				case 1:
					op.writes[b] = true
					ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{
						Key: []byte(key), Value: value}}})
				case 2:
					ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestRange{RequestRange: &logpb.RangeRequest{
						Key: []byte(key)}}})
				}
			}
			if b == 0 {
				txn.Success = ops
			} else {
				txn.Failure = ops
			}
		}
		cmd.Op = &logpb.Command_Txn{Txn: txn}
	}
	if v := logpb.Needs(cmd); v > logpb.Version1 {
		cmd.Version = v
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		r.fail(CoreContract, "encoding write %d: %v", id, err)
	}
	r.evs.add(op)
	return data
}

// newEvent draws event j of branch b of write op, which writes key.
func (r *nodeRun) newEvent(op *evOp, b, j int, key string) *logpb.Event {
	rng := r.rng
	e := &logpb.Event{Topic: pick(rng, eventTopics...), Payload: eventPayload(op.id, b, j)}
	switch rng.IntN(3) {
	case 0:
		if op.kind != "publish" {
			e.Key = []byte(key)
		}
	case 1:
		e.Key = fmt.Appendf(nil, "k%d", rng.IntN(r.w.keys))
	}
	if rng.IntN(2) == 0 {
		e.Id = fmt.Sprintf("ev-%d-%d-%d", op.id, b, j)
	}
	if rng.IntN(4) == 0 {
		e.Headers = map[string]string{"write": strconv.FormatUint(op.id, 10)}
	}
	return e
}
