package gossip

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Node is one member's gossip core. See the package doc for the contract. It is not safe for
// concurrent use.
type Node struct {
	cfg Config
	t   timing
	rng *rand.Rand
	log *slog.Logger
	now uint64

	self    *member
	leaving bool
	health  int

	members map[string]*member
	order   []*member // every known member, self included, in the order first learned
	live    int       // alive and suspect members, self included

	probeList []*member // the current round of the randomized round-robin
	probeIdx  int
	probe     *probeState
	nextProbe uint64
	seq       uint64
	relays    []relay   // ping-reqs this node is serving as intermediary
	suspects  []*member // members with a running suspicion timer

	nextGossip, nextPushPull, nextReap uint64

	queue    *queue
	out      []Packet
	events   []Event
	counters Counters
	buf      []byte

	bugs bugs
}

// bugs are planted faults, set only by tests, to show that the tests' checkers catch them.
type bugs struct {
	noRefute bool // never refute a suspicion of self
	noBuddy  bool // pings to a suspect do not carry the suspicion
}

type member struct {
	Member
	susp      *suspicion
	inProbe   bool // already in probeList's unvisited part
	trouble   int  // consecutive probes answered over a stream only
	troubleAt uint64
}

// probeState is the probe of the current protocol period.
type probeState struct {
	target        *member
	seq           uint64
	indirectAt    uint64
	indirectSent  bool
	acked         bool
	streamAcked   bool
	expectedNacks int
	nacks         int
}

// relay is a ping-req being served: our ping to the target (seq) answers origin's (originSeq).
type relay struct {
	seq, originSeq uint64
	origin         string
	deadline       uint64
	nack           bool
}

// New creates a node that knows only itself. Join (or a push-pull from another member) connects
// it to a group.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Meta = slices.Clone(cfg.Meta)
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n := &Node{
		cfg: cfg, t: cfg.timing(),
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		log:     lg.With("gossip", cfg.Name),
		members: map[string]*member{},
		queue:   newQueue(cfg.MaxBroadcasts),
	}
	n.self = &member{Member: Member{Name: cfg.Name, Addr: cfg.Addr, Meta: cfg.Meta, State: StateAlive}}
	n.members[cfg.Name] = n.self
	n.order = append(n.order, n.self)
	n.live = 1
	n.broadcastAlive(n.self)
	// Spread first timers over one period so that members started together do not act together.
	n.nextProbe = 1 + n.rng.Uint64N(n.t.probeInterval)
	n.nextGossip = 1 + n.rng.Uint64N(n.t.gossipInterval)
	if n.t.pushPull > 0 {
		n.nextPushPull = 1 + n.rng.Uint64N(n.t.pushPull)
	}
	n.nextReap = n.t.probeInterval
	return n, nil
}

// Join starts a push-pull with each address: the members there merge this node's state and
// answer with theirs. Joining is asynchronous: the node has joined once Members lists others.
func (n *Node) Join(addrs ...string) {
	for _, a := range addrs {
		if a != "" && a != n.cfg.Addr {
			n.sendPushPull(a, ppJoin)
		}
	}
}

// Leave announces that this node leaves the group. It keeps answering and gossiping (so that the
// news spreads; Status.LeaveSpread says when it has) but stops probing. A left node cannot rejoin:
// create a new Node (with the same name, it will refute the left state with a higher
// incarnation).
func (n *Node) Leave() {
	if n.leaving {
		return
	}
	n.leaving = true
	n.setState(n.self, StateLeft)
	n.broadcastLeft(n.self)
}

// UpdateMeta replaces this node's metadata and announces it with a new incarnation.
func (n *Node) UpdateMeta(meta []byte) error {
	if len(meta) > MaxMetaBytes {
		return fmt.Errorf("gossip: metadata of %d bytes is over the limit of %d", len(meta), MaxMetaBytes)
	}
	if n.leaving {
		return fmt.Errorf("gossip: update metadata: the node has left")
	}
	n.self.Meta = slices.Clone(meta)
	n.self.Incarnation++
	n.broadcastAlive(n.self)
	return nil
}

// HasReady reports whether Ready would return anything.
func (n *Node) HasReady() bool { return len(n.out) > 0 || len(n.events) > 0 }

// Ready hands over the packets to send and the events to deliver.
func (n *Node) Ready() Ready {
	rd := Ready{Packets: n.out, Events: n.events}
	n.out, n.events = nil, nil
	return rd
}

// Members returns a copy of every known member (self included), sorted by name.
func (n *Node) Members() []Member {
	out := make([]Member, 0, len(n.order))
	for _, m := range n.order {
		out = append(out, m.Member.clone())
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the node's view of one member.
func (n *Node) Member(name string) (Member, bool) {
	m, ok := n.members[name]
	if !ok {
		return Member{}, false
	}
	return m.Member.clone(), true
}

// Status returns a snapshot of the node's state.
func (n *Node) Status() Status {
	c := n.counters
	c.BroadcastsDropped = n.queue.dropped
	c.BroadcastsSuperseded = n.queue.superseded
	st := Status{
		Name: n.cfg.Name, Addr: n.cfg.Addr, Incarnation: n.self.Incarnation, Tick: n.now,
		Health: n.health, Live: n.live, Left: n.leaving,
		LeaveSpread:      n.leaving && !n.queue.has(n.cfg.Name),
		QueuedBroadcasts: n.queue.len(), Counters: c,
	}
	for _, m := range n.order {
		if m.trouble >= n.cfg.PacketTroubleAfter {
			st.PacketTrouble = append(st.PacketTrouble, PacketTrouble{Name: m.Name, Addr: m.Addr, Since: m.troubleAt, Failures: m.trouble})
		}
	}
	slices.SortFunc(st.PacketTrouble, func(a, b PacketTrouble) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// scaled multiplies a probe duration by the health score + 1 (Lifeguard local health awareness).
func (n *Node) scaled(ticks uint64) uint64 { return ticks * uint64(n.health+1) }

func (n *Node) adjustHealth(delta int) {
	n.health = min(max(n.health+delta, 0), n.cfg.AwarenessMax-1)
}

// Tick advances the node's logical clock by one tick and runs what is due.
func (n *Node) Tick() {
	n.now++
	if p := n.probe; p != nil && !p.acked && !p.indirectSent && n.now >= p.indirectAt {
		n.sendIndirect(p)
	}
	if n.now >= n.nextProbe {
		n.finishProbe()
		if !n.leaving {
			n.startProbe()
		}
		n.nextProbe = n.now + n.scaled(n.t.probeInterval)
	}
	n.expireRelays()
	n.expireSuspicions()
	if n.now >= n.nextGossip {
		n.gossip()
		n.nextGossip = n.now + n.t.gossipInterval
	}
	if n.t.pushPull > 0 && n.now >= n.nextPushPull {
		if !n.leaving {
			if m := n.randomMember(func(m *member) bool { return m.State == StateAlive }); m != nil {
				n.sendPushPull(m.Addr, 0)
			}
		}
		n.nextPushPull = n.now + n.t.pushPull*pushPullScale(n.live)
	}
	if n.now >= n.nextReap {
		n.reap()
		n.nextReap = n.now + n.t.probeInterval
	}
}

// pushPullScale stretches the push-pull period in large groups, whose full states are large:
// 1 up to 32 members, then one more per doubling.
func pushPullScale(n int) uint64 {
	if n <= 32 {
		return 1
	}
	return 1 + uint64(math.Ceil(math.Log2(float64(n)/32)))
}

// Step handles a packet or stream message received from the network. It returns an error (and
// counts it) for a malformed message or one of another cluster; the caller may log it.
func (n *Node) Step(p Packet) error {
	limit := n.cfg.MaxPacketBytes
	if p.Stream {
		limit = n.cfg.MaxStreamBytes
	}
	if len(p.Data) > limit {
		n.counters.DecodeErrors++
		return fmt.Errorf("%w: %d bytes from %s, over the limit of %d", ErrMalformed, len(p.Data), p.Addr, limit)
	}
	label, body, err := decodeHeader(p.Data)
	if err != nil {
		n.counters.DecodeErrors++
		return fmt.Errorf("gossip: message from %s: %w", p.Addr, err)
	}
	if label != n.cfg.Label {
		n.counters.LabelMismatch++
		return fmt.Errorf("%w: message from %s has label %q, ours is %q", ErrLabelMismatch, p.Addr, label, n.cfg.Label)
	}
	parts, err := decodeParts(body)
	if err != nil {
		// Parts before the bad one are well-formed but may be cut short of their context
		// (a ping without the updates after it is fine; a half-read one is not): drop all.
		n.counters.DecodeErrors++
		return fmt.Errorf("gossip: message from %s: %w", p.Addr, err)
	}
	for i := range parts {
		n.handle(&parts[i], p.Stream)
	}
	return nil
}

func (n *Node) handle(m *msg, stream bool) {
	switch m.typ {
	case msgPing:
		n.handlePing(m, stream)
	case msgPingReq:
		n.handlePingReq(m)
	case msgAck:
		n.handleAck(m, stream)
	case msgNack:
		if p := n.probe; p != nil && p.seq == m.seq {
			p.nacks++
		}
	case msgAlive:
		n.applyAlive(m.name, m.addr, m.inc, m.meta, true)
	case msgSuspect:
		n.applySuspect(m.name, m.inc, m.from)
	case msgDead:
		n.applyDead(m.name, m.inc, m.from)
	case msgLeft:
		n.applyLeft(m.name, m.inc)
	case msgPushPull:
		n.handlePushPull(m)
	}
}

// send encodes a primary part (nil for none) with as many queued updates as fit, and queues it.
// extra, if set, is an update that must go first (the buddy suspicion).
func (n *Node) send(addr string, primary *msg, extra *msg) {
	b := appendHeader(n.buf[:0], n.cfg.Label)
	if primary != nil {
		b = appendMsg(b, primary)
	}
	skip := ""
	if extra != nil {
		b = appendMsg(b, extra)
		skip = extra.name
	}
	before := len(b)
	b = n.queue.fill(b, n.cfg.MaxPacketBytes-len(b), retransmitLimit(n.cfg.RetransmitMult, len(n.order)), skip)
	if primary == nil && extra == nil && len(b) == before {
		n.buf = b
		return // a gossip packet with nothing to say
	}
	n.out = append(n.out, Packet{Addr: addr, Data: slices.Clone(b)})
	n.buf = b
}

// sendStream queues a stream message of one part.
func (n *Node) sendStream(addr string, m *msg, reply bool) {
	b := appendMsg(appendHeader(nil, n.cfg.Label), m)
	n.out = append(n.out, Packet{Addr: addr, Stream: true, Reply: reply, Data: b})
}

func (n *Node) emit(t EventType, m *member) {
	n.events = append(n.events, Event{Type: t, Member: m.Member.clone()})
}

// randomMember returns a random member (not self) for which ok holds, or nil. It samples rather
// than scans, so that it costs O(1) in a large group; with few eligible members it falls back to
// a scan.
func (n *Node) randomMember(ok func(*member) bool) *member {
	if len(n.order) <= 1 {
		return nil
	}
	for range 8 {
		m := n.order[n.rng.IntN(len(n.order))]
		if m != n.self && ok(m) {
			return m
		}
	}
	var cands []*member
	for _, m := range n.order {
		if m != n.self && ok(m) {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[n.rng.IntN(len(cands))]
}

// randomMembers returns up to k distinct random members (not self, not in exclude) for which ok
// holds.
func (n *Node) randomMembers(k int, exclude *member, ok func(*member) bool) []*member {
	var out []*member
	take := func(m *member) bool {
		if m == n.self || m == exclude || !ok(m) || slices.Contains(out, m) {
			return false
		}
		out = append(out, m)
		return true
	}
	for tries := 0; len(out) < k && tries < 4*k && len(n.order) > 1; tries++ {
		take(n.order[n.rng.IntN(len(n.order))])
	}
	if len(out) < k {
		// Few eligible members: pick from all of them, starting at a random point.
		start := n.rng.IntN(len(n.order))
		for i := range n.order {
			if len(out) >= k {
				break
			}
			take(n.order[(start+i)%len(n.order)])
		}
	}
	return out
}

// gossip sends queued updates to GossipFanout random members.
func (n *Node) gossip() {
	if n.queue.len() == 0 {
		return
	}
	targets := n.randomMembers(n.cfg.GossipFanout, nil, func(m *member) bool {
		return m.State.live() || n.now-m.Since < n.t.gossipToDead
	})
	for _, m := range targets {
		if n.queue.len() == 0 {
			break
		}
		n.send(m.Addr, nil, nil)
	}
}

// sameMeta compares metadata, nil and empty alike.
func sameMeta(a, b []byte) bool { return bytes.Equal(a, b) }
