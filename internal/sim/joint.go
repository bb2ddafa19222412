package sim

import (
	"fmt"
	"slices"

	"github.com/caucus/caucus/raft"
)

// Held joint reconfigurations. The random membership changes of confChange pass through a joint
// configuration only briefly (AutoLeave) and differ in one voter. On a third of the seeds
// (jointHoldBySeed) the chaos phase also replaces several voters at once with a joint change that
// is left only when the simulator says so, and while the configuration is joint it cuts off one
// of its halves: the voters only in the outgoing half, or only in the incoming one, are
// partitioned from the rest or crashed at the moment the first member applies the joint
// configuration, when the others may not have learned that it committed. That is where counting
// one half only (an election or a ReadIndex round won by the incoming majority alone) lets two
// sides act at once: a side that still runs the old configuration and a side that runs the
// joint one.

// jointHoldBySeed says whether a seed runs held joint reconfigurations. It is derived from the
// seed, not drawn, so that the other seeds' runs stay what they were, and a replay needs no flag.
func jointHoldBySeed(seed uint64) bool { return mix64(seed^0x701d7e1d)%3 == 0 }

// leaderLeavesBySeed says whether a seed's random membership changes (confChange, under either
// driver) may remove or demote the leader itself, which then leads a configuration it is not a
// voter of until a voter replaces it (the core's leaving.go). Derived from the seed, like
// jointHoldBySeed, so that the other seeds' runs stay what they were.
func leaderLeavesBySeed(seed uint64) bool { return mix64(seed^0x1ea7e5)%3 == 0 }

// removableVoters returns the voters a random membership change may remove, demote or swap
// out: the voters other than the leader, or on leaderLeavesBySeed seeds every voter.
func removableVoters(seed uint64, voters []raft.NodeID, leader raft.NodeID) []raft.NodeID {
	if leaderLeavesBySeed(seed) {
		return slices.Clone(voters)
	}
	return slices.DeleteFunc(slices.Clone(voters), func(id raft.NodeID) bool { return id == leader })
}

type jointPhase uint8

const (
	jointIdle jointPhase = iota
	jointHeld            // a joint change was proposed; leave it from leaveAt on
)

// jointCut is what happens to one half when the joint configuration is first applied.
type jointCut uint8

const (
	cutNone jointCut = iota
	cutPartitionOutgoing
	cutPartitionIncoming
	cutCrashOutgoing
)

// jointSchedule is the state of the held joint reconfigurations of a run.
type jointSchedule struct {
	on      bool
	rate    float64 // chance per tick of starting one when idle
	hold    int     // ticks a joint configuration is held before the simulator leaves it
	phase   jointPhase
	cut     jointCut      // armed for the first application of the joint configuration
	outOnly []raft.NodeID // voters of the outgoing half only
	inOnly  []raft.NodeID // voters of the incoming half only
	leaveAt uint64        // next tick to (re)try leaving
}

func (j jointSchedule) String() string {
	if !j.on {
		return "off"
	}
	return fmt.Sprintf("rate=%.2f hold=%d", j.rate, j.hold)
}

func (s *simulation) drawJointSchedule() {
	if !jointHoldBySeed(s.o.Seed) {
		return
	}
	s.joint = jointSchedule{
		on:   true,
		rate: pick(s.rng, 0.01, 0.03, 0.1),
		hold: pick(s.rng, 20, 60, 150),
	}
	// With check-quorum a leader cut off from the outgoing half steps down within an election
	// timeout, usually before the other side has elected a leader and committed anything; on
	// half of these seeds it stays, so that what it does with the incoming half alone matters.
	if s.rng.IntN(2) == 0 {
		s.w.checkQuorum = false
	}
}

// jointTick advances the schedule by one chaos tick.
func (s *simulation) jointTick() {
	j := &s.joint
	switch j.phase {
	case jointIdle:
		if s.rng.Float64() < j.rate {
			s.enterJoint()
		}
	case jointHeld:
		if s.now < j.leaveAt {
			return
		}
		l := s.leader()
		if l == nil {
			return
		}
		cs := l.rn.Status().ConfState
		if len(cs.VotersOutgoing) == 0 {
			// Left (or the joint change never committed): ready for the next one.
			j.phase, j.cut = jointIdle, cutNone
			return
		}
		j.leaveAt = s.now + electionTick
		// A leader of the outgoing half only proposes the leave too: it leads the configuration
		// it applies without itself as a voter until it has handed leadership over (the core's
		// leaving.go), so the others learn that the joint configuration was left.
		err := l.rn.ProposeConfChange(raft.ConfChange{})
		s.ev(0x26, uint64(l.id), b2u(err == nil))
		if s.o.Trace != nil {
			s.tracef("n%d propose leaving the joint configuration: err=%v", l.id, err)
		}
		s.drain(l)
	}
}

// enterJoint proposes, at the leader, a change that replaces up to all but one voter with nodes
// that are not voters (learners, or spares never started), through a joint configuration held
// until the schedule leaves it. Replaced voters mostly become learners, so that a later change
// can bring them back; some are removed for good.
func (s *simulation) enterJoint() {
	l := s.leader()
	if l == nil {
		return
	}
	cs := l.rn.Status().ConfState
	if len(cs.VotersOutgoing) > 0 || len(cs.Voters) < 2 {
		return
	}
	var cands []raft.NodeID
	for _, n := range s.nodes[1:] {
		// Not a member on its way out: it exits at its removeAt whatever a later change says.
		if !n.removed && n.removeAt == 0 && !slices.Contains(cs.Voters, n.id) {
			cands = append(cands, n.id)
		}
	}
	// The leader may be replaced too: it then leads a configuration whose incoming half it is
	// not part of until the schedule leaves it (see jointTick), and then hands over.
	voters := slices.Clone(cs.Voters)
	k := min(len(cands), len(voters)-1)
	if k == 0 {
		return
	}
	k = 1 + s.rng.IntN(k)
	s.rng.Shuffle(len(voters), func(a, b int) { voters[a], voters[b] = voters[b], voters[a] })
	s.rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	out, in := voters[:k], cands[:k]
	cc := raft.ConfChange{Joint: true}
	for _, id := range in {
		cc.Changes = append(cc.Changes, raft.ConfChangeSingle{Type: raft.ConfChangeAddVoter, NodeID: id})
	}
	for _, id := range out {
		cc.Changes = append(cc.Changes, raft.ConfChangeSingle{Type: raft.ConfChangeAddLearner, NodeID: id})
	}
	err := l.rn.ProposeConfChange(cc)
	s.ev(0x25, uint64(l.id), uint64(len(cc.Changes)), b2u(err == nil))
	if s.o.Trace != nil {
		s.tracef("n%d propose held joint change %+v: err=%v", l.id, cc.Changes, err)
	}
	if err != nil {
		return
	}
	s.st.Faults[FaultJointEnter]++
	j := &s.joint
	j.phase, j.leaveAt = jointHeld, s.now+uint64(j.hold)
	j.outOnly, j.inOnly = slices.Sorted(slices.Values(out)), slices.Sorted(slices.Values(in))
	// Cutting off the outgoing-only voters is the cut that lets an old-configuration side act
	// beside a joint one, so it comes up most.
	j.cut = pick(s.rng, cutNone, cutPartitionOutgoing, cutPartitionOutgoing, cutPartitionIncoming, cutCrashOutgoing)
	s.drain(l)
}

// onJointApplied runs when member at is the first to apply a joint configuration: the armed cut
// strikes now, while the other members may not yet know that the change committed. A crash spares
// at itself, which is in the middle of handling a Ready.
func (s *simulation) onJointApplied(at *simNode) {
	j := &s.joint
	cut := j.cut
	j.cut = cutNone
	if !j.on || j.phase != jointHeld || cut == cutNone || s.quiesced {
		return
	}
	half := j.outOnly
	if cut == cutPartitionIncoming {
		half = j.inOnly
	}
	var desc string
	switch cut {
	case cutPartitionOutgoing, cutPartitionIncoming:
		var rest []raft.NodeID
		for _, id := range s.members() {
			if !slices.Contains(half, id) {
				rest = append(rest, id)
			}
		}
		if s.net.partitioned {
			s.net.heal()
		}
		s.net.split(half, rest, false)
		s.partUntil = s.now + 1 + uint64(s.rng.IntN(2*j.hold))
		desc = fmt.Sprintf("partition %v | %v until %d", half, rest, s.partUntil)
	case cutCrashOutgoing:
		for _, id := range half {
			if n := s.nodes[id]; n != at && n.up() {
				s.crash(n, "with its half of the joint configuration")
			}
		}
		desc = fmt.Sprintf("crash %v", half)
	}
	s.st.Faults[FaultJointCut]++
	s.ev(0x27, uint64(cut))
	if s.o.Trace != nil {
		s.tracef("joint configuration applied (outgoing only %v, incoming only %v): %s", j.outOnly, j.inOnly, desc)
	}
}
