package sim

import (
	"encoding/binary"
	"slices"

	"github.com/caucus/caucus/raft"
)

// Membership changes under the node driver: proposed through node.Driver.ProposeConfChange,
// applied by the members' nodes (and their state machines), acted on by the simulator as by the
// core driver (onConfig): an added member starts empty and is caught up by the leader, a removed
// one lingers, then exits for good.

// confContext is a configuration change's Context: the proposal id and the proposer, so that
// the proposer's state machine answers it.
func confContext(id uint64, proposer raft.NodeID) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, id), uint64(proposer))
}

// confProposal decodes the proposal a configuration-change entry answers, if it carries one
// (not the bootstrap configuration, nor a leader's automatic leave of a joint one).
func confProposal(e raft.Entry) (id uint64, proposer raft.NodeID, ok bool) {
	cc, err := raft.DecodeConfChange(e.Data)
	if err != nil || len(cc.Context) != 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(cc.Context), raft.NodeID(binary.BigEndian.Uint64(cc.Context[8:])), true
}

// confChange proposes a random membership change at the leader, with the core driver's
// choices: add a spare as a learner, promote or remove a learner, swap a learner for a voter
// through a joint configuration, demote or remove a voter while more than minVoters remain.
func (r *nodeRun) confChange() {
	l := r.leader()
	if l == nil {
		return
	}
	cs := l.d.Status().ConfState
	if len(cs.VotersOutgoing) > 0 {
		return
	}
	single := func(t raft.ConfChangeType, id raft.NodeID) raft.ConfChange {
		return raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: t, NodeID: id}}}
	}
	var choices []raft.ConfChange
	for _, m := range r.members[1:] {
		if !m.joined && !m.removed {
			choices = append(choices, single(raft.ConfChangeAddLearner, m.id))
			break
		}
	}
	others := removableVoters(r.o.Seed, cs.Voters, l.id)
	for _, id := range cs.Learners {
		choices = append(choices, single(raft.ConfChangeAddVoter, id), single(raft.ConfChangeRemoveNode, id))
		if len(others) > 0 {
			out := others[r.rng.IntN(len(others))]
			choices = append(choices, raft.ConfChange{Joint: true, AutoLeave: true, Changes: []raft.ConfChangeSingle{
				{Type: raft.ConfChangeAddVoter, NodeID: id}, {Type: raft.ConfChangeRemoveNode, NodeID: out}}})
		}
	}
	if len(cs.Voters) > minVoters && len(others) > 0 {
		v := others[r.rng.IntN(len(others))]
		demote := single(raft.ConfChangeAddLearner, v)
		demote.Joint, demote.AutoLeave = true, true
		choices = append(choices, single(raft.ConfChangeRemoveNode, v), single(raft.ConfChangeAddLearner, v), demote)
	}
	if len(choices) == 0 {
		return
	}
	cc := choices[r.rng.IntN(len(choices))]
	r.nextID++
	id := r.nextID
	cc.Context = r.changeContext(id, l.id, cc)
	r.st.Faults[FaultConfChange]++
	r.ev(0x23, uint64(l.id), uint64(len(cc.Changes)), id)
	if r.o.Trace != nil {
		r.tracef("n%d propose conf change %d: %+v", l.id, id, cc.Changes)
	}
	var p *nodeProp
	r.step(l, "a conf change", func() error {
		pp, err := l.d.ProposeConfChange(id, cc)
		p = &nodeProp{id: id, p: pp}
		return err
	})
	if l.up() && p != nil {
		l.props = append(l.props, *p)
		r.answers(l)
	}
}

// onConfig acts on a newly applied configuration (the simulator's, not the members': they act
// on it themselves): added members start, removed ones are scheduled to exit.
func (r *nodeRun) onConfig(cs raft.ConfState) {
	r.conf = cs
	r.confs = append(r.confs, cloneConfState(cs))
	if len(r.confs) > 3 {
		r.confs = r.confs[1:]
	}
	if r.o.Trace != nil {
		r.tracef("config %d: voters=%v outgoing=%v learners=%v next=%v", r.confIndex, cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext)
	}
	for _, m := range r.members[1:] {
		in := inConf(cs, m.id)
		switch {
		case in && !m.joined && !m.removed:
			m.joined = true
			r.startMember(m)
		case in && m.removeAt != 0:
			m.removeAt = 0 // added back before it exited
		case !in && m.joined && !m.removed && m.removeAt == 0:
			m.removeAt = r.now + removalGrace
			if r.o.Trace != nil {
				r.tracef("n%d removed from the cluster: exits at tick %d", m.id, m.removeAt)
			}
		}
	}
}

// othersKnowRemoved reports whether every voter of the newest configuration is up and has
// applied a configuration without m (see simulation.othersKnowRemoved).
func (r *nodeRun) othersKnowRemoved(m *member) bool {
	for _, o := range r.members[1:] {
		if o == m || o.removed || !(slices.Contains(r.conf.Voters, o.id) || slices.Contains(r.conf.VotersOutgoing, o.id)) {
			continue
		}
		if !o.up() || inConf(o.d.Status().ConfState, m.id) {
			return false
		}
	}
	return true
}

// unawareRemoved reports whether removed member m is up and has not applied its removal (see
// simulation.unawareRemoved).
func (r *nodeRun) unawareRemoved(m *member) bool {
	return m.up() && inConf(m.d.Status().ConfState, m.id)
}

// exitRemoved shuts a removed member down for good.
func (r *nodeRun) exitRemoved(m *member) {
	m.removed, m.removeAt = true, 0
	if m.sm != nil {
		m.sm.kill(false)
	}
	m.n, m.d, m.sm, m.clock, m.exec = nil, nil, nil, nil, nil
	m.props, m.reads, m.unreach = nil, nil, nil
	r.ev(0xb2, uint64(m.id))
	if r.o.Trace != nil {
		r.tracef("n%d removed from the cluster: shut down", m.id)
	}
}

// memberIDs are the members a partition is laid over: started and not removed.
func (r *nodeRun) memberIDs() []raft.NodeID {
	var ids []raft.NodeID
	for _, m := range r.members[1:] {
		if m.started && !m.removed {
			ids = append(ids, m.id)
		}
	}
	return ids
}

// heldByQuorum reports whether a quorum of one of the recent configurations, or of cur (the
// applying member's), holds e durably (or a durable snapshot covering it). The configuration an
// entry was committed under is the committing leader's, which may be a step behind or ahead of
// the newest one a member applied.
func (r *nodeRun) heldByQuorum(e raft.Entry, cur raft.ConfState) bool {
	holds := func(id raft.NodeID) bool {
		if int(id) >= len(r.members) {
			return false
		}
		ref := r.members[id].log.durable
		t, ok := ref.Term(e.Index)
		return ok && t == e.Term || ref.SnapshotMeta().Index >= e.Index
	}
	majority := func(voters []raft.NodeID) bool {
		n := 0
		for _, id := range voters {
			if holds(id) {
				n++
			}
		}
		return n > len(voters)/2
	}
	quorum := func(cs raft.ConfState) bool {
		return majority(cs.Voters) && (len(cs.VotersOutgoing) == 0 || majority(cs.VotersOutgoing))
	}
	return quorum(cur) || slices.ContainsFunc(r.confs, quorum)
}
