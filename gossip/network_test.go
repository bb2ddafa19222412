package gossip

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// A deterministic network of gossip cores: every tick each running node ticks, then the packets
// due at that tick are delivered, each after a random delay, with optional loss (packets only),
// partitions, blocked UDP, crashed (down) and paused members. The same seed replays the same run.

type tevent struct {
	tick uint64
	Event
}

type tnode struct {
	name, addr string
	n          *Node
	down       bool // crashed: neither ticks nor receives
	paused     bool // neither ticks nor handles; what arrives waits in held
	held       []delivery
	events     []tevent // what its Ready handed over, with the cluster tick
}

type delivery struct {
	from string
	p    Packet
}

type cluster struct {
	t      testing.TB
	seed   uint64
	rng    *rand.Rand
	now    uint64
	nodes  []*tnode
	byAddr map[string]*tnode
	byName map[string]*tnode
	due    map[uint64][]delivery

	loss               float64         // probability that a packet (not a stream) is lost
	minDelay, maxDelay uint64          // ticks, at least 1
	group              map[string]int  // partition: different groups (by addr) cannot talk
	udpBlocked         map[string]bool // packets to or from these addrs are dropped
	// dropIf, if set, drops the packets and streams it returns true for.
	dropIf func(from string, p Packet) bool
	// trace, if set, sees every packet sent (before loss).
	trace func(from string, p Packet)

	sent, stepErrs int
}

// testSeed returns the seed for a test: GOSSIP_SEED if set, else def. A failing test prints it.
func testSeed(t testing.TB, def uint64) uint64 {
	seed := def
	if s := os.Getenv("GOSSIP_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GOSSIP_SEED %q: %v", s, err)
		}
		seed = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (rerun with GOSSIP_SEED=%d)", seed, seed)
		}
	})
	return seed
}

func newCluster(t testing.TB, seed uint64) *cluster {
	return &cluster{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 1)),
		byAddr: map[string]*tnode{}, byName: map[string]*tnode{}, due: map[uint64][]delivery{},
		minDelay: 1, maxDelay: 2, group: map[string]int{}, udpBlocked: map[string]bool{},
	}
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i) }
func nodeAddr(i int) string { return fmt.Sprintf("10.0.%d.%d:7946", i/250, i%250+1) }

type cfgFn func(*Config)

// lanCfg is the LAN profile, seeded from the cluster seed and the name.
func (c *cluster) lanCfg(name, addr string, opts ...cfgFn) Config {
	cfg := DefaultLANConfig(name, addr)
	cfg.Seed = c.seed*1_000_003 + uint64(len(c.nodes))*7919
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// add starts a node (not joined).
func (c *cluster) add(cfg Config) *tnode {
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	tn := &tnode{name: cfg.Name, addr: cfg.Addr, n: n}
	c.nodes = append(c.nodes, tn)
	c.byAddr[cfg.Addr] = tn
	c.byName[cfg.Name] = tn
	c.drain(tn)
	return tn
}

// start adds nodes n0..n(k-1) and joins each to n0.
func (c *cluster) start(k int, opts ...cfgFn) {
	for i := range k {
		tn := c.add(c.lanCfg(nodeName(i), nodeAddr(i), opts...))
		if i > 0 {
			tn.n.Join(nodeAddr(0))
			c.drain(tn)
		}
	}
}

// converge runs until every running node sees every running node alive, failing after max ticks.
func (c *cluster) converge(max uint64) uint64 {
	c.t.Helper()
	start := c.now
	c.runUntil(max, "every node sees every running node alive", c.allSeeAllAlive)
	return c.now - start
}

func (c *cluster) allSeeAllAlive() bool {
	for _, a := range c.nodes {
		if a.down {
			continue
		}
		for _, b := range c.nodes {
			if b.down {
				continue
			}
			m, ok := a.n.Member(b.name)
			if !ok || m.State != StateAlive || m.Addr != b.addr {
				return false
			}
		}
	}
	return true
}

func (c *cluster) node(name string) *tnode {
	tn := c.byName[name]
	if tn == nil {
		c.t.Fatalf("no node %s", name)
	}
	return tn
}

// stateOf returns what observer believes about subject ("" if unknown).
func (c *cluster) stateOf(observer, subject string) string {
	m, ok := c.node(observer).n.Member(subject)
	if !ok {
		return ""
	}
	return m.State.String()
}

func (c *cluster) run(ticks uint64) {
	for range ticks {
		c.tick()
	}
}

// runUntil ticks until cond holds, failing after max ticks.
func (c *cluster) runUntil(max uint64, what string, cond func() bool) uint64 {
	c.t.Helper()
	for i := uint64(0); ; i++ {
		if cond() {
			return i
		}
		if i >= max {
			c.t.Fatalf("after %d ticks (now %d): not yet: %s", max, c.now, what)
		}
		c.tick()
	}
}

func (c *cluster) tick() {
	c.now++
	for _, tn := range c.nodes {
		if tn.down || tn.paused {
			continue
		}
		tn.n.Tick()
		c.drain(tn)
	}
	due := c.due[c.now]
	delete(c.due, c.now)
	for _, d := range due {
		c.deliver(d)
	}
}

func (c *cluster) deliver(d delivery) {
	to := c.byAddr[d.p.Addr]
	if to == nil || to.down {
		return
	}
	if to.paused {
		to.held = append(to.held, d)
		return
	}
	in := Packet{Addr: d.from, Stream: d.p.Stream, Reply: d.p.Reply, Data: d.p.Data}
	if err := to.n.Step(in); err != nil {
		c.stepErrs++
	}
	c.drain(to)
}

func (c *cluster) drain(tn *tnode) {
	if !tn.n.HasReady() {
		return
	}
	rd := tn.n.Ready()
	for _, e := range rd.Events {
		tn.events = append(tn.events, tevent{tick: c.now, Event: e})
	}
	for _, p := range rd.Packets {
		c.send(tn.addr, p)
	}
}

func (c *cluster) send(from string, p Packet) {
	c.sent++
	if !p.Stream && len(p.Data) > DefaultMaxPacketBytes {
		c.t.Fatalf("packet of %d bytes from %s, over %d", len(p.Data), from, DefaultMaxPacketBytes)
	}
	if c.trace != nil {
		c.trace(from, p)
	}
	if c.group[from] != c.group[p.Addr] || (c.dropIf != nil && c.dropIf(from, p)) {
		return
	}
	if !p.Stream {
		if c.udpBlocked[from] || c.udpBlocked[p.Addr] {
			return
		}
		if c.loss > 0 && c.rng.Float64() < c.loss {
			return
		}
	}
	at := c.now + c.minDelay + c.rng.Uint64N(c.maxDelay-c.minDelay+1)
	c.due[at] = append(c.due[at], delivery{from: from, p: p})
}

// partition puts the named nodes in their own group (others stay in group 0).
func (c *cluster) partition(id int, names ...string) {
	for _, n := range names {
		c.group[c.node(n).addr] = id
	}
}

func (c *cluster) heal() { clear(c.group) }

func (c *cluster) pause(name string) { c.node(name).paused = true }

func (c *cluster) resume(name string) {
	tn := c.node(name)
	tn.paused = false
	held := tn.held
	tn.held = nil
	for _, d := range held {
		c.deliver(d)
	}
}

// eventsAbout returns every event, at any node other than subject, about subject of type typ.
func (c *cluster) eventsAbout(subject string, typ EventType) []string {
	var out []string
	for _, tn := range c.nodes {
		if tn.name == subject {
			continue
		}
		for _, e := range tn.events {
			if e.Type == typ && e.Member.Name == subject {
				out = append(out, fmt.Sprintf("%s@%d: %v", tn.name, e.tick, e.Event))
			}
		}
	}
	return out
}

// countEvents counts events of typ at all nodes.
func (c *cluster) countEvents(typ EventType) int {
	k := 0
	for _, tn := range c.nodes {
		for _, e := range tn.events {
			if e.Type == typ {
				k++
			}
		}
	}
	return k
}

// clearEvents forgets recorded events.
func (c *cluster) clearEvents() {
	for _, tn := range c.nodes {
		tn.events = nil
	}
}
