package gossip

import "slices"

// Precedence of news about a member (SWIM 4.2, with a left state). Incarnations only grow, and
// only the member itself increments its own. With i the incarnation we hold:
//
//   - alive(j) overrides any state when j > i; it is ignored when j <= i.
//   - suspect(j) overrides alive when j >= i; about a suspect it is a confirmation.
//   - dead(j) overrides alive and suspect when j >= i.
//   - left(j) overrides alive, suspect and dead when j >= i.
//
// So at one incarnation left > dead > suspect > alive, and only a higher incarnation (a
// refutation, or a restart that learned its old incarnation) brings a member back. News about
// this node itself is never applied: a suspicion or death with j >= its incarnation is refuted
// by announcing alive(max(i, j)+1).

func (n *Node) setState(m *member, st State) {
	if m.State == st {
		return
	}
	if m.State.live() != st.live() {
		if st.live() {
			n.live++
		} else {
			n.live--
		}
	}
	if m.State == StateSuspect {
		m.susp = nil
		if i := slices.Index(n.suspects, m); i >= 0 {
			n.suspects = slices.Delete(n.suspects, i, i+1)
		}
	}
	if !st.live() {
		m.trouble = 0
	}
	m.State = st
	m.Since = n.now
	if st.live() {
		n.addToRound(m)
	}
}

func (n *Node) addMember(name, addr string, inc uint64, meta []byte) *member {
	m := &member{Member: Member{Name: name, Addr: addr, Incarnation: inc, Meta: slices.Clone(meta), State: StateAlive, Since: n.now}}
	n.members[name] = m
	n.order = append(n.order, m)
	n.live++
	n.addToRound(m)
	return m
}

// applyAlive handles alive(inc) about name. spread says whether to gossip it on when accepted.
// News learned from a push-pull is gossiped on too: a push-pull mostly repairs what gossip missed,
// and a member that missed it is likely not the only one (simultaneous joins are the usual case).
// A joiner's queue fills with the whole group's records; MaxBroadcasts bounds that.
func (n *Node) applyAlive(name, addr string, inc uint64, meta []byte, spread bool) {
	if name == n.cfg.Name {
		n.aliveAboutSelf(addr, inc, meta)
		return
	}
	m := n.members[name]
	if m == nil {
		m = n.addMember(name, addr, inc, meta)
		n.emit(EventJoin, m)
		if spread {
			n.broadcastAlive(m)
		}
		return
	}
	if addr != m.Addr {
		// Name reclaim: a left member's name is free at once, a dead member's after ReclaimAfter.
		if m.State == StateLeft || (m.State == StateDead && n.now-m.Since >= n.t.reclaim) {
			m.Addr, m.Incarnation, m.Meta = addr, inc, slices.Clone(meta)
			n.setState(m, StateAlive)
			n.emit(EventJoin, m)
			if spread {
				n.broadcastAlive(m)
			}
			return
		}
		n.counters.NameConflicts++
		if inc > m.Incarnation { // log a claim once per incarnation, count every refusal
			n.log.Warn("gossip: refusing a claim of a member's name from another address",
				"member", name, "addr", m.Addr, "state", m.State, "claim_addr", addr)
		}
		return
	}
	if inc <= m.Incarnation {
		return
	}
	prev := m.State
	metaChanged := !sameMeta(meta, m.Meta)
	m.Incarnation = inc
	if metaChanged {
		m.Meta = slices.Clone(meta)
	}
	n.setState(m, StateAlive)
	switch {
	case prev == StateSuspect:
		n.emit(EventAlive, m)
	case prev == StateDead || prev == StateLeft:
		n.emit(EventJoin, m)
	case metaChanged:
		n.emit(EventUpdate, m)
	}
	if spread {
		n.broadcastAlive(m)
	}
}

// aliveAboutSelf: another member holds a newer or different record of this node (it restarted
// and others remember a higher incarnation, or its metadata changed since): announce a newer one.
// A claim of this name from another address is a conflict for the others to settle (they refuse
// it while this node is alive): competing refutations would never end.
func (n *Node) aliveAboutSelf(addr string, inc uint64, meta []byte) {
	s := n.self
	if addr != s.Addr {
		if inc >= s.Incarnation {
			n.counters.NameConflicts++
			n.log.Warn("gossip: another member claims this node's name", "claim_addr", addr)
		}
		return
	}
	if inc > s.Incarnation || (inc == s.Incarnation && !sameMeta(meta, s.Meta)) {
		if n.leaving {
			s.Incarnation = inc + 1
			n.broadcastLeft(s)
			return
		}
		s.Incarnation = inc + 1
		n.broadcastAlive(s)
	}
}

// applySuspect handles suspect(inc) about name, accused by from.
func (n *Node) applySuspect(name string, inc uint64, from string) {
	if name == n.cfg.Name {
		if !n.leaving && inc >= n.self.Incarnation {
			n.refute(inc, true)
		}
		return
	}
	m := n.members[name]
	if m == nil || inc < m.Incarnation {
		return
	}
	switch m.State {
	case StateDead, StateLeft:
		return
	case StateSuspect:
		if inc > m.Incarnation {
			m.Incarnation = inc
		}
		if m.susp.confirm(from) {
			n.broadcastSuspect(m, from)
		}
		return
	}
	m.Incarnation = inc
	n.setState(m, StateSuspect)
	lo, hi := suspicionBounds(n.cfg.SuspicionMult, n.cfg.SuspicionMaxMult, n.t.probeInterval, n.live)
	k := min(n.cfg.SuspicionConfirmations, max(n.live-2, 0))
	m.susp = newSuspicion(n.now, lo, hi, k, from)
	n.suspects = append(n.suspects, m)
	n.emit(EventSuspect, m)
	n.broadcastSuspect(m, from)
}

// applyDead handles dead(inc) about name, declared by from.
func (n *Node) applyDead(name string, inc uint64, from string) {
	if name == n.cfg.Name {
		if !n.leaving && inc >= n.self.Incarnation {
			n.refute(inc, true)
		}
		return
	}
	m := n.members[name]
	if m == nil || inc < m.Incarnation || !m.State.live() {
		return
	}
	m.Incarnation = inc
	n.setState(m, StateDead)
	n.emit(EventDead, m)
	n.broadcastDead(m, from)
}

// applyLeft handles left(inc) about name (only the member itself sends it first).
func (n *Node) applyLeft(name string, inc uint64) {
	if name == n.cfg.Name {
		if !n.leaving && inc >= n.self.Incarnation {
			n.refute(inc, false)
		}
		return
	}
	m := n.members[name]
	if m == nil || inc < m.Incarnation || m.State == StateLeft {
		return
	}
	m.Incarnation = inc
	n.setState(m, StateLeft)
	n.emit(EventLeft, m)
	n.broadcastLeft(m)
}

// refute announces this node alive with an incarnation above inc. Being suspected is a hint that
// this node is slow (Lifeguard): its health score grows.
func (n *Node) refute(inc uint64, suspected bool) {
	if n.bugs.noRefute {
		return
	}
	n.self.Incarnation = max(n.self.Incarnation, inc) + 1
	n.counters.Refutations++
	if suspected {
		n.adjustHealth(1)
	}
	n.broadcastAlive(n.self)
}

func (n *Node) expireSuspicions() {
	var due []*member
	for _, m := range n.suspects {
		if n.now >= m.susp.deadline {
			due = append(due, m)
		}
	}
	for _, m := range due {
		n.applyDead(m.Name, m.Incarnation, n.cfg.Name)
	}
}

func (n *Node) broadcastAlive(m *member) {
	n.queue.push(m.Name, appendMsg(nil, &msg{typ: msgAlive, name: m.Name, addr: m.Addr, inc: m.Incarnation, meta: m.Meta}))
}

func (n *Node) broadcastSuspect(m *member, from string) {
	n.queue.push(m.Name, appendMsg(nil, &msg{typ: msgSuspect, name: m.Name, inc: m.Incarnation, from: from}))
}

func (n *Node) broadcastDead(m *member, from string) {
	n.queue.push(m.Name, appendMsg(nil, &msg{typ: msgDead, name: m.Name, inc: m.Incarnation, from: from}))
}

func (n *Node) broadcastLeft(m *member) {
	n.queue.push(m.Name, appendMsg(nil, &msg{typ: msgLeft, name: m.Name, inc: m.Incarnation}))
}

// sendPushPull sends this node's full state over a stream. The state is cut to MaxStreamBytes
// (this node first, then in the order learned) and the cut is counted.
func (n *Node) sendPushPull(addr string, flags uint8) {
	pp := msg{typ: msgPushPull, ppFlags: flags, from: n.cfg.Name, fromAddr: n.cfg.Addr}
	pp.members = make([]Member, 0, len(n.order))
	for _, m := range n.order {
		pp.members = append(pp.members, m.Member) // order[0] is self
	}
	for {
		b := appendMsg(appendHeader(nil, n.cfg.Label), &pp)
		if len(b) <= n.cfg.MaxStreamBytes || len(pp.members) <= 1 {
			n.out = append(n.out, Packet{Addr: addr, Stream: true, Reply: flags&ppReply != 0, Data: b})
			return
		}
		n.counters.OversizedState++
		keep := len(pp.members) * n.cfg.MaxStreamBytes / len(b)
		pp.members = pp.members[:max(1, min(keep, len(pp.members)-1))]
	}
}

// handlePushPull answers a request with this node's state, then merges the sender's. A remote
// dead is merged as a suspicion: this node has not seen the evidence, and the member gets a
// suspicion timeout to refute (as in memberlist).
func (n *Node) handlePushPull(m *msg) {
	if m.from == n.cfg.Name {
		return
	}
	if m.ppFlags&ppReply == 0 && m.fromAddr != "" {
		n.sendPushPull(m.fromAddr, ppReply)
	}
	for i := range m.members {
		r := &m.members[i]
		switch r.State {
		case StateAlive:
			n.applyAlive(r.Name, r.Addr, r.Incarnation, r.Meta, true)
		case StateSuspect, StateDead:
			// An unknown suspect is learned (it may be alive); an unknown dead one is not.
			if _, known := n.members[r.Name]; !known && r.State == StateSuspect && r.Name != n.cfg.Name {
				n.applyAlive(r.Name, r.Addr, r.Incarnation, r.Meta, false)
			}
			n.applySuspect(r.Name, r.Incarnation, m.from)
		case StateLeft:
			n.applyLeft(r.Name, r.Incarnation)
		}
	}
}

// reap forgets dead and left members after ReapAfter.
func (n *Node) reap() {
	gone := false
	for _, m := range n.order {
		if m != n.self && !m.State.live() && n.now-m.Since >= n.t.reap {
			delete(n.members, m.Name)
			n.emit(EventReap, m)
			gone = true
		}
	}
	if gone {
		n.order = slices.DeleteFunc(n.order, func(m *member) bool { return n.members[m.Name] != m })
	}
}
