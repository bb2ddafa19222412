package sim

import (
	"fmt"
	"math"
	"slices"

	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// The node driver's workload, faults and liveness probe.

// chaos injects this tick's faults and workload.
func (r *nodeRun) chaos() {
	s, w := r.simulation, &r.w
	for _, m := range r.members[1:] {
		if m.joined && !m.removed && !m.up() && s.now >= m.downTil {
			s.st.Faults[FaultRestart]++
			r.startMember(m)
		}
	}
	if s.net.partitioned && s.now >= s.partUntil {
		s.heal()
	} else if !s.net.partitioned && w.partitionRate > 0 && s.rng.Float64() < w.partitionRate {
		s.partition()
	}
	if w.crashRate > 0 && s.rng.Float64() < w.crashRate {
		if m := r.randomUp(); m != nil {
			r.crash(m, s.rng.IntN(2) == 0, "between steps")
		}
	}
	if w.proposeRate > 0 && s.rng.Float64() < w.proposeRate {
		if m := r.randomUp(); m != nil {
			r.propose(m, fmt.Sprintf("k%d", s.rng.IntN(w.keys)), "w")
		}
	}
	if r.cw != nil {
		r.cw.tick()
	}
	if w.readRate > 0 && s.rng.Float64() < w.readRate {
		if m := r.randomUp(); m != nil {
			rd := nodeRead{minApplied: s.chk.maxAcked, tick: s.now}
			if r.evs != nil {
				// Under SMFSM the read also reads a register from the store once answered.
				rd.key = fmt.Sprintf("k%d", s.rng.IntN(w.keys))
				rd.minKeyIndex = r.evs.lastWrite[rd.key]
			}
			r.step(m, "a read", func() error {
				var err error
				rd.r, err = m.d.Read()
				return err
			})
			if m.up() && rd.r != nil {
				m.reads = append(m.reads, rd)
				r.answers(m)
			}
			s.ev(0x22, uint64(m.id), rd.minApplied)
		}
	}
	if w.confRate > 0 && s.rng.Float64() < w.confRate {
		r.confChange()
	}
	if w.transferRate > 0 && s.rng.Float64() < w.transferRate {
		l := r.leader()
		var others []raft.NodeID
		if l != nil {
			others = slices.DeleteFunc(slices.Clone(l.d.Status().ConfState.Voters), func(id raft.NodeID) bool { return id == l.id })
		}
		if len(others) > 0 {
			to := others[s.rng.IntN(len(others))]
			s.st.Faults[FaultTransfer]++
			s.ev(0x24, uint64(l.id), uint64(to))
			r.step(l, "a leadership transfer", func() error { return l.d.TransferLeadership(to) })
		}
	}
	if w.campaignRate > 0 && s.rng.Float64() < w.campaignRate {
		if m := r.randomUp(); m != nil {
			s.st.Faults[FaultCampaign]++
			s.ev(0x11, uint64(m.id))
			r.step(m, "a forced campaign", m.d.Campaign)
		}
	}
}

// propose submits a unique write of key at m; tag marks the liveness probe. Under SMFSM the
// write is a logpb.Command (fsmwork.go).
func (r *nodeRun) propose(m *member, key, tag string) {
	r.nextID++
	id := r.nextID
	var data []byte
	if r.evs != nil {
		data = r.fsmCommand(m, id, key, tag)
	} else {
		data = encodeWrite(key, writeValue(id, m.id, tag))
	}
	r.submit(m, id, data, func() string {
		if r.evs != nil {
			return r.evs.ops[id].String()
		}
		return string(data)
	})
}

// submit proposes data as proposal id at m; what describes it for the trace.
func (r *nodeRun) submit(m *member, id uint64, data []byte, what func() string) {
	var p *node.Proposal
	r.step(m, "a proposal", func() error {
		var err error
		p, err = m.d.Propose(id, data)
		return err
	})
	r.st.Proposed++
	r.ev(0x21, uint64(m.id), id)
	if r.o.Trace != nil {
		r.tracef("n%d propose %d: %s", m.id, id, what())
	}
	if m.up() && p != nil {
		m.props = append(m.props, nodeProp{id: id, p: p})
		r.answers(m)
	}
}

func (r *nodeRun) randomUp() *member {
	var ups []*member
	for _, m := range r.members[1:] {
		if m.up() {
			ups = append(ups, m)
		}
	}
	if len(ups) == 0 {
		return nil
	}
	return ups[r.rng.IntN(len(ups))]
}

// leader returns the up member that believes it leads in the highest term, or nil.
func (r *nodeRun) leader() *member {
	var l *member
	for _, m := range r.members[1:] {
		if m.up() && m.role == raft.StateLeader && (l == nil || m.term > l.term) {
			l = m
		}
	}
	return l
}

func (r *nodeRun) checkLeader(m *member) {
	if m.lcTerm != m.term {
		m.lcTerm, m.lcCursor = m.term, 0
	}
	cur, msg := r.chk.leaderHolds(m.id, m.term, m.log.written, m.lcCursor)
	m.lcCursor = cur
	r.check(LeaderCompleteness, msg)
}

// quiesce ends the chaos: the network heals and becomes reliable, every member restarts, and
// background work runs right after the step that started it.
func (r *nodeRun) quiesce() {
	s := r.simulation
	s.quiesced = true
	if s.net.partitioned {
		s.heal()
	}
	if s.o.isolateAtQuiesce {
		ids := r.memberIDs()
		for _, id := range ids {
			s.net.split([]raft.NodeID{id}, ids, false)
		}
	}
	s.w.drop, s.w.dup = 0, 0
	s.w.maxLatency = min(s.w.maxLatency, quiesceLatency)
	var maxLast, minCommit uint64 = 0, math.MaxUint64
	for _, m := range r.members[1:] {
		if m.joined && !m.removed {
			maxLast = max(maxLast, m.log.durable.LastIndex())
			minCommit = min(minCommit, m.log.durable.HardState().Commit)
		}
	}
	backlog := maxLast - min(minCommit, maxLast)
	s.liveBy = s.now + LivenessBound + LivenessTicksPerEntry*backlog
	if s.o.Trace != nil {
		s.tracef("QUIESCE: faults stop; backlog %d entries; the probe must land by tick %d", backlog, s.liveBy)
	}
	for _, m := range r.members[1:] {
		if m.joined && !m.removed && !m.up() {
			s.st.Faults[FaultRestart]++
			r.startMember(m)
		}
	}
	s.probeAt = 0
}

// probed reports whether m's state machine holds a liveness probe.
func (m *member) probed() bool { return m.up() && m.sm.probed() }

// live drives the liveness probe and reports whether it succeeded: a leader exists, and the
// probe is applied on every member.
func (r *nodeRun) live() bool {
	l := r.leader()
	if l == nil {
		return false
	}
	if !l.probed() {
		if r.probeAt == 0 || r.now >= r.probeAt+electionTick {
			r.probeAt = r.now
			r.propose(l, probeKey, "probe")
		}
		return false
	}
	cs := l.d.Status().ConfState
	for _, m := range r.members[1:] {
		if inConf(cs, m.id) && !m.removed && !m.probed() {
			return false
		}
	}
	if r.o.Trace != nil {
		r.tracef("LIVE: leader %d term %d, probe applied on every member", l.id, l.term)
	}
	return true
}

func (r *nodeRun) clusterState() string {
	var b []byte
	for _, m := range r.members[1:] {
		if !m.started {
			continue
		}
		if !m.up() {
			b = fmt.Appendf(b, "[n%d down removed=%t] ", m.id, m.removed)
			continue
		}
		st := m.d.Status()
		b = fmt.Appendf(b, "[n%d %s term=%d lead=%d commit=%d applied=%d last=%d tasks=%d probe=%t] ", m.id, st.SoftState.State,
			st.HardState.Term, st.SoftState.Lead, st.HardState.Commit, st.Applied, st.LastIndex, len(m.exec.tasks), m.probed())
	}
	return string(b)
}
