package sim

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/caucus/caucus/raft"
)

// chaos is one tick of the chaos phase: restarts that are due, new faults, and the workload.
func (s *simulation) chaos() {
	w := &s.w
	for _, n := range s.nodes[1:] {
		if n.member && !n.removed && !n.up() && s.now >= n.downTil {
			s.st.Faults[FaultRestart]++
			s.start(n)
		}
	}
	if s.net.partitioned && s.now >= s.partUntil {
		s.heal()
	} else if !s.net.partitioned && w.partitionRate > 0 && s.rng.Float64() < w.partitionRate {
		s.partition()
	}
	if w.crashRate > 0 && s.rng.Float64() < w.crashRate {
		if n := s.randomUp(); n != nil {
			s.crash(n, "between steps")
		}
	}
	if w.proposeRate > 0 && s.rng.Float64() < w.proposeRate {
		s.propose()
	}
	if w.readRate > 0 && s.rng.Float64() < w.readRate {
		s.read()
	}
	if w.confRate > 0 && s.rng.Float64() < w.confRate {
		s.confChange()
	}
	if w.transferRate > 0 && s.rng.Float64() < w.transferRate {
		s.transfer()
	}
	if w.campaignRate > 0 && s.rng.Float64() < w.campaignRate {
		if n := s.randomUp(); n != nil {
			s.st.Faults[FaultCampaign]++
			s.ev(0x11, uint64(n.id))
			if s.o.Trace != nil {
				s.tracef("n%d forced to campaign", n.id)
			}
			_ = n.rn.Campaign() // a learner or removed node may refuse; that is fine
			s.drain(n)
		}
	}
	if s.joint.on {
		s.jointTick()
	}
}

func (s *simulation) heal() {
	s.net.heal()
	s.st.Faults[FaultHeal]++
	s.ev(0x12)
	if s.o.Trace != nil {
		s.tracef("network healed")
	}
}

// members are the nodes a partition is laid over: started and not removed, up or down.
func (s *simulation) members() []raft.NodeID {
	if s.nr != nil {
		return s.nr.memberIDs()
	}
	var ids []raft.NodeID
	for _, n := range s.nodes[1:] {
		if n.started && !n.removed {
			ids = append(ids, n.id)
		}
	}
	return ids
}

func (s *simulation) partition() {
	ids := s.members()
	if len(ids) < 2 {
		return
	}
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	kind := s.w.partKinds[s.rng.IntN(len(s.w.partKinds))]
	lead := s.leaderID()
	if (kind == partIsolateLeader || kind == partLeaderOneWay) && lead == raft.None {
		kind = partSplit
	}
	var a, b []raft.NodeID
	var desc string
	switch kind {
	case partSplit, partOneWay:
		cut := 1 + s.rng.IntN(len(ids)-1)
		a, b = ids[:cut], ids[cut:]
		s.net.split(a, b, kind == partOneWay)
		if kind == partSplit {
			s.st.Faults[FaultPartitionSplit]++
			desc = fmt.Sprintf("split %v | %v", a, b)
		} else {
			s.st.Faults[FaultPartitionOneWay]++
			desc = fmt.Sprintf("one-way %v -> %v cut", a, b)
		}
	case partIsolateLeader, partLeaderOneWay:
		a = []raft.NodeID{lead}
		for _, id := range ids {
			if id != lead {
				b = append(b, id)
			}
		}
		if kind == partIsolateLeader {
			s.net.split(a, b, false)
			s.st.Faults[FaultIsolateLeader]++
			desc = fmt.Sprintf("leader %d isolated", lead)
		} else {
			// The leader still hears everyone but nobody hears it (or the reverse): the classic
			// asymmetric failure that check-quorum and pre-vote exist for.
			if s.rng.IntN(2) == 0 {
				s.net.split(a, b, true)
				desc = fmt.Sprintf("leader %d cannot send", lead)
			} else {
				s.net.split(b, a, true)
				desc = fmt.Sprintf("leader %d cannot receive", lead)
			}
			s.st.Faults[FaultLeaderOneWay]++
		}
	case partBridge:
		if len(ids) < 3 {
			return
		}
		mid := ids[0]
		rest := ids[1:]
		cut := 1 + s.rng.IntN(len(rest)-1)
		a, b = rest[:cut], rest[cut:]
		s.net.split(a, b, false)
		s.st.Faults[FaultBridge]++
		desc = fmt.Sprintf("bridge %d between %v and %v", mid, a, b)
	}
	s.partUntil = s.now + 1 + uint64(s.rng.IntN(s.w.partitionLen))
	s.ev(0x13, uint64(kind), s.partUntil)
	if s.o.Trace != nil {
		s.tracef("partition: %s until %d", desc, s.partUntil)
	}
}

// propose submits a unique write at a random live node (followers forward it).
func (s *simulation) propose() {
	n := s.randomUp()
	if n == nil {
		return
	}
	s.writes++
	key := fmt.Sprintf("k%d", s.rng.IntN(s.w.keys))
	val := fmt.Sprintf("v%d", s.writes)
	err := n.rn.Propose(encodeWrite(key, val))
	s.ev(0x21, uint64(n.id), s.writes, b2u(err == nil))
	if err != nil {
		return
	}
	s.st.Proposed++
	s.pending[val] = pendingWrite{node: n.id, inc: n.inc}
	if s.o.Trace != nil {
		s.tracef("n%d propose %s=%s", n.id, key, val)
	}
	s.drain(n)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// read issues a ReadIndex request at a random live node, remembering the writes it must observe.
func (s *simulation) read() {
	n := s.randomUp()
	if n == nil {
		return
	}
	s.readSeq++
	ctx := binary.BigEndian.AppendUint64(nil, s.readSeq)
	err := n.rn.ReadIndex(ctx)
	s.ev(0x22, uint64(n.id), s.readSeq, b2u(err == nil))
	if err != nil {
		return
	}
	n.reads = append(n.reads, readReq{ctx: s.readSeq, tick: s.now, minApplied: s.chk.maxAcked})
	if s.o.Trace != nil {
		s.tracef("n%d read-index request %d (must see index %d)", n.id, s.readSeq, s.chk.maxAcked)
	}
	s.drain(n)
}

// confChange proposes a random membership change at the leader.
func (s *simulation) confChange() {
	l := s.leader()
	if l == nil {
		return
	}
	cs := l.rn.Status().ConfState
	if len(cs.VotersOutgoing) > 0 {
		return
	}
	var choices []raft.ConfChange
	single := func(t raft.ConfChangeType, id raft.NodeID) raft.ConfChange {
		return raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: t, NodeID: id}}}
	}
	for _, n := range s.nodes[1:] {
		if !n.member && !n.removed {
			choices = append(choices, single(raft.ConfChangeAddLearner, n.id))
			break
		}
	}
	others := removableVoters(s.o.Seed, cs.Voters, l.id)
	for _, id := range cs.Learners {
		choices = append(choices, single(raft.ConfChangeAddVoter, id), single(raft.ConfChangeRemoveNode, id))
		if len(others) > 0 {
			out := others[s.rng.IntN(len(others))]
			// A joint swap: the learner replaces a voter through a joint configuration.
			choices = append(choices, raft.ConfChange{Joint: true, AutoLeave: true, Changes: []raft.ConfChangeSingle{
				{Type: raft.ConfChangeAddVoter, NodeID: id}, {Type: raft.ConfChangeRemoveNode, NodeID: out}}})
		}
	}
	if len(cs.Voters) > minVoters && len(others) > 0 {
		v := others[s.rng.IntN(len(others))]
		choices = append(choices, single(raft.ConfChangeRemoveNode, v), single(raft.ConfChangeAddLearner, v))
		cc := single(raft.ConfChangeAddLearner, v)
		cc.Joint, cc.AutoLeave = true, true
		choices = append(choices, cc)
	}
	if len(choices) == 0 {
		return
	}
	cc := choices[s.rng.IntN(len(choices))]
	err := l.rn.ProposeConfChange(cc)
	s.ev(0x23, uint64(l.id), uint64(len(cc.Changes)), b2u(err == nil))
	if s.o.Trace != nil {
		s.tracef("n%d propose conf change %+v: err=%v", l.id, cc, err)
	}
	if err == nil {
		s.st.Faults[FaultConfChange]++
	}
	s.drain(l)
}

func (s *simulation) transfer() {
	l := s.leader()
	if l == nil {
		return
	}
	voters := slices.DeleteFunc(slices.Clone(l.rn.Status().ConfState.Voters), func(id raft.NodeID) bool { return id == l.id })
	if len(voters) == 0 {
		return
	}
	to := voters[s.rng.IntN(len(voters))]
	err := l.rn.TransferLeadership(to)
	s.ev(0x24, uint64(l.id), uint64(to), b2u(err == nil))
	if s.o.Trace != nil {
		s.tracef("n%d transfer leadership to %d: err=%v", l.id, to, err)
	}
	if err == nil {
		s.st.Faults[FaultTransfer]++
	}
	s.drain(l)
}

// quiesce ends the chaos: the network heals and becomes reliable, every member restarts.
func (s *simulation) quiesce() {
	s.quiesced = true
	if s.net.partitioned {
		s.heal()
	}
	if s.o.isolateAtQuiesce {
		ids := s.members()
		for _, id := range ids {
			s.net.split([]raft.NodeID{id}, ids, false)
		}
	}
	s.w.drop, s.w.dup = 0, 0
	s.w.maxLatency = min(s.w.maxLatency, quiesceLatency)
	var maxLast, minCommit uint64 = 0, math.MaxUint64
	for _, n := range s.nodes[1:] {
		if n.member && !n.removed {
			maxLast = max(maxLast, n.store.LastIndex())
			minCommit = min(minCommit, n.store.HardState().Commit)
		}
	}
	backlog := maxLast - min(minCommit, maxLast)
	s.liveBy = s.now + LivenessBound + LivenessTicksPerEntry*backlog
	if s.o.Trace != nil {
		s.tracef("QUIESCE: faults stop; backlog %d entries; the probe must land by tick %d", backlog, s.liveBy)
	}
	for _, n := range s.nodes[1:] {
		if n.member && !n.removed && !n.up() {
			s.st.Faults[FaultRestart]++
			s.start(n)
		}
	}
	s.probeAt = 0
}

// live drives the liveness probe and reports whether it succeeded: a leader exists, and the probe
// write is applied on every live member of the leader's configuration.
func (s *simulation) live() bool {
	l := s.leader()
	if l == nil {
		return false
	}
	if !s.probed(l) {
		// (Re)propose periodically: a proposal can be lost with a deposed leader.
		if s.probeAt == 0 || s.now >= s.probeAt+electionTick {
			s.probeAt = s.now
			err := l.rn.Propose(s.probe)
			s.ev(0x31, uint64(l.id), b2u(err == nil))
			if s.o.Trace != nil {
				s.tracef("n%d propose liveness probe: err=%v", l.id, err)
			}
			s.drain(l)
		}
		return false
	}
	cs := l.rn.Status().ConfState
	for _, n := range s.nodes[1:] {
		if inConf(cs, n.id) && !n.removed && !s.probed(n) {
			return false
		}
	}
	if s.o.Trace != nil {
		s.tracef("LIVE: leader %d term %d, probe applied on every member", l.id, l.term)
	}
	return true
}
