package gossip

// nextTarget advances the randomized round-robin: each round visits every live member once in a
// fresh random order (SWIM 4.3), so a failed member is probed within one round of its failure.
// Members learned during a round are inserted at a random position of its unvisited part.
func (n *Node) nextTarget() *member {
	for range 2 {
		for n.probeIdx < len(n.probeList) {
			m := n.probeList[n.probeIdx]
			n.probeList[n.probeIdx] = nil
			n.probeIdx++
			m.inProbe = false
			if n.members[m.Name] == m && m.State.live() {
				return m
			}
		}
		// A new round.
		n.probeList = n.probeList[:0]
		n.probeIdx = 0
		for _, m := range n.order {
			if m != n.self && m.State.live() {
				m.inProbe = true
				n.probeList = append(n.probeList, m)
			}
		}
		n.rng.Shuffle(len(n.probeList), func(i, j int) {
			n.probeList[i], n.probeList[j] = n.probeList[j], n.probeList[i]
		})
	}
	return nil
}

// addToRound inserts a newly live member at a random unvisited position of the current round.
func (n *Node) addToRound(m *member) {
	if m == n.self || m.inProbe {
		return
	}
	m.inProbe = true
	n.probeList = append(n.probeList, m)
	unvisited := len(n.probeList) - n.probeIdx
	j := n.probeIdx + n.rng.IntN(unvisited)
	last := len(n.probeList) - 1
	n.probeList[j], n.probeList[last] = n.probeList[last], n.probeList[j]
}

func (n *Node) nextSeq() uint64 {
	n.seq++
	return n.seq
}

// startProbe pings the next target. A ping to a suspect carries the suspicion (Lifeguard's buddy
// system), so that a member that missed the news can refute at once.
func (n *Node) startProbe() {
	t := n.nextTarget()
	if t == nil {
		n.probe = nil
		return
	}
	p := &probeState{target: t, seq: n.nextSeq(), indirectAt: n.now + n.scaled(n.t.probeTimeout)}
	n.probe = p
	ping := msg{typ: msgPing, seq: p.seq, name: t.Name, from: n.cfg.Name, fromAddr: n.cfg.Addr}
	var buddy *msg
	if t.State == StateSuspect && !n.bugs.noBuddy {
		buddy = &msg{typ: msgSuspect, name: t.Name, inc: t.Incarnation, from: n.cfg.Name}
	}
	n.send(t.Addr, &ping, buddy)
}

// sendIndirect starts the indirect round: ping-reqs through IndirectChecks alive members, each
// asked to nack if the target does not answer it (Lifeguard), and the stream fallback probe.
func (n *Node) sendIndirect(p *probeState) {
	p.indirectSent = true
	t := p.target
	via := n.randomMembers(n.cfg.IndirectChecks, t, func(m *member) bool { return m.State == StateAlive })
	p.expectedNacks = len(via)
	req := msg{typ: msgPingReq, seq: p.seq, name: t.Name, addr: t.Addr, fromAddr: n.cfg.Addr, flag: true}
	for _, m := range via {
		n.send(m.Addr, &req, nil)
	}
	if n.cfg.StreamFallback {
		n.sendStream(t.Addr, &msg{typ: msgPing, seq: p.seq, name: t.Name, from: n.cfg.Name, fromAddr: n.cfg.Addr}, false)
	}
}

// finishProbe closes the period's probe. Without an ack the target becomes suspect, unless it
// answered over a stream (then packets are the problem, reported as PacketTrouble). The health
// score grows by the nacks that did not come (each one hints that this node, not the target, is
// slow), or by one when there was nobody to ask.
func (n *Node) finishProbe() {
	p := n.probe
	n.probe = nil
	if p == nil || p.acked {
		return
	}
	t := p.target
	if n.members[t.Name] != t || !t.State.live() {
		return // the target changed (left, died, reclaimed) during the probe
	}
	n.counters.ProbeFailures++
	if p.streamAcked {
		n.counters.StreamRescues++
		if t.trouble == 0 {
			t.troubleAt = n.now
		}
		t.trouble++
		if t.trouble == n.cfg.PacketTroubleAfter {
			n.log.Warn("gossip: " + PacketTrouble{Name: t.Name, Addr: t.Addr}.String())
		}
		return
	}
	if p.expectedNacks == 0 {
		n.adjustHealth(1)
	} else if missed := p.expectedNacks - p.nacks; missed > 0 {
		n.adjustHealth(missed)
	}
	n.applySuspect(t.Name, t.Incarnation, n.cfg.Name)
}

func (n *Node) handlePing(m *msg, stream bool) {
	if m.name != n.cfg.Name {
		// Meant for the member that used to have this address.
		n.counters.Misaddressed++
		return
	}
	if m.fromAddr == "" {
		return
	}
	ack := msg{typ: msgAck, seq: m.seq}
	if stream {
		n.sendStream(m.fromAddr, &ack, true)
		return
	}
	n.send(m.fromAddr, &ack, nil)
}

// handlePingReq pings the target on behalf of the requester and remembers to relay the ack (or a
// nack after ProbeTimeout).
func (n *Node) handlePingReq(m *msg) {
	if m.addr == "" || m.fromAddr == "" {
		return
	}
	r := relay{seq: n.nextSeq(), originSeq: m.seq, origin: m.fromAddr, deadline: n.now + n.t.probeTimeout, nack: m.flag}
	n.relays = append(n.relays, r)
	n.send(m.addr, &msg{typ: msgPing, seq: r.seq, name: m.name, from: n.cfg.Name, fromAddr: n.cfg.Addr}, nil)
}

func (n *Node) handleAck(m *msg, stream bool) {
	if p := n.probe; p != nil && p.seq == m.seq {
		if stream {
			p.streamAcked = true
			return
		}
		if !p.acked {
			p.acked = true
			p.target.trouble = 0
			n.adjustHealth(-1)
		}
		return
	}
	if stream {
		return
	}
	for i := range n.relays {
		if r := n.relays[i]; r.seq == m.seq {
			n.send(r.origin, &msg{typ: msgAck, seq: r.originSeq}, nil)
			n.relays = append(n.relays[:i], n.relays[i+1:]...)
			return
		}
	}
}

func (n *Node) expireRelays() {
	keep := n.relays[:0]
	for _, r := range n.relays {
		if n.now < r.deadline {
			keep = append(keep, r)
			continue
		}
		if r.nack {
			n.send(r.origin, &msg{typ: msgNack, seq: r.originSeq}, nil)
		}
	}
	clear(n.relays[len(keep):])
	n.relays = keep
}
