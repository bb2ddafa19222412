package raft

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
)

// discardLogger keeps test output readable; failures print the transcript instead.
var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// memStorage is what a test node persisted: exactly what Ready told it to persist.
type memStorage struct {
	hs   HardState
	snap *Snapshot
	ents []Entry
}

func (s *memStorage) persist(rd Ready) {
	if !rd.HardState.IsEmpty() {
		s.hs = rd.HardState
	}
	if rd.Snapshot != nil {
		sn := *rd.Snapshot
		s.snap = &sn
		s.ents = nil
	}
	if len(rd.Entries) > 0 {
		// Truncate at the first new index (Ready's contract), then append.
		first := rd.Entries[0].Index
		keep := 0
		if len(s.ents) > 0 && first > s.ents[0].Index {
			keep = int(min(first-s.ents[0].Index, uint64(len(s.ents))))
		}
		s.ents = append(s.ents[:keep], rd.Entries...)
	}
}

func (s *memStorage) state() PersistentState {
	return PersistentState{HardState: s.hs, Snapshot: s.snap, Entries: slices.Clone(s.ents)}
}

// network drives several nodes: it persists each Ready by keeping it in memory, applies committed
// entries by recording them, and delivers messages in a deterministic order.
type network struct {
	t       testing.TB
	ids     []NodeID
	cfgs    map[NodeID]Config
	nodes   map[NodeID]*Node
	storage map[NodeID]*memStorage
	// applied records every entry each node's state machine applied, in order.
	applied map[NodeID][]Entry
	// readStates records every ReadState each node produced.
	readStates map[NodeID][]ReadState
	// cut links (from, to) drop messages; a down node neither sends nor receives.
	cut  map[[2]NodeID]bool
	down map[NodeID]bool
	// drop, if set, drops the messages it returns true for.
	drop func(Message) bool
	// rewrite, if set, replaces each message before delivery (e.g. to withhold some entries).
	rewrite func(Message) Message
	// inflight is the queue of sent, undelivered messages.
	inflight []Message
	// trace, if set, receives every delivered message.
	trace func(Message)
}

type cfgOpt func(*Config)

func testConfig(id NodeID, opts ...cfgOpt) Config {
	c := DefaultConfig(id)
	c.ElectionTick = 10
	c.HeartbeatTick = 1
	c.PreVote = false
	c.CheckQuorum = false
	c.Seed = uint64(id) * 7919
	c.Logger = discardLogger
	for _, o := range opts {
		o(&c)
	}
	return c
}

func withPreVote(c *Config)     { c.PreVote = true }
func withCheckQuorum(c *Config) { c.CheckQuorum = true }

// newNetwork bootstraps a cluster of voters 1..n (plus any extra IDs that start empty and join
// later).
func newNetwork(t testing.TB, voters int, opts ...cfgOpt) *network {
	nw := &network{
		t: t, cfgs: map[NodeID]Config{}, nodes: map[NodeID]*Node{}, storage: map[NodeID]*memStorage{},
		applied: map[NodeID][]Entry{}, readStates: map[NodeID][]ReadState{},
		cut: map[[2]NodeID]bool{}, down: map[NodeID]bool{},
	}
	var initial []NodeID
	for i := 1; i <= voters; i++ {
		initial = append(initial, NodeID(i))
	}
	for _, id := range initial {
		cfg := testConfig(id, opts...)
		cfg.InitialVoters = initial
		nw.add(cfg)
	}
	return nw
}

// add creates a node (brand new: it bootstraps if cfg.InitialVoters is set, else it waits to be
// contacted).
func (nw *network) add(cfg Config) *Node {
	n, err := New(cfg, PersistentState{})
	if err != nil {
		nw.t.Fatalf("New(%d): %v", cfg.ID, err)
	}
	cfg.InitialVoters = nil
	nw.ids = append(nw.ids, cfg.ID)
	slices.Sort(nw.ids)
	nw.cfgs[cfg.ID] = cfg
	nw.nodes[cfg.ID] = n
	nw.storage[cfg.ID] = &memStorage{}
	return n
}

// restart rebuilds a node from its storage, as after a crash; unsent messages and volatile state
// are lost.
func (nw *network) restart(id NodeID) {
	cfg := nw.cfgs[id]
	cfg.Applied = 0
	if s := nw.storage[id].snap; s != nil {
		cfg.Applied = s.Meta.Index
	}
	// The test state machine is the applied list; replay from the snapshot point.
	ap := nw.applied[id][:0]
	for _, e := range nw.applied[id] {
		if e.Index <= cfg.Applied {
			ap = append(ap, e)
		}
	}
	nw.applied[id] = ap
	n, err := New(cfg, nw.storage[id].state())
	if err != nil {
		nw.t.Fatalf("restart %d: %v", id, err)
	}
	nw.nodes[id] = n
}

func (nw *network) node(id NodeID) *Node { return nw.nodes[id] }

// isolate cuts every link to and from id.
func (nw *network) isolate(id NodeID) {
	for _, o := range nw.ids {
		if o != id {
			nw.cut[[2]NodeID{id, o}] = true
			nw.cut[[2]NodeID{o, id}] = true
		}
	}
}

// heal restores every link.
func (nw *network) heal() { clear(nw.cut) }

// handleReady processes one Ready of one node. It returns whether there was one.
func (nw *network) handleReady(id NodeID) bool {
	n := nw.nodes[id]
	if !n.HasReady() {
		return false
	}
	rd := n.Ready()
	nw.inflight = append(nw.inflight, rd.Messages...)
	nw.storage[id].persist(rd)
	nw.inflight = append(nw.inflight, rd.MessagesAfterPersist...)
	nw.apply(id, rd)
	nw.readStates[id] = append(nw.readStates[id], rd.ReadStates...)
	n.Advance(rd)
	return true
}

// apply installs rd's snapshot and applies its committed entries to id's test state machine,
// failing at once if an entry is handed out twice, skipped or out of order: a core that re-applies
// would otherwise only show as a Ready loop that never drains.
func (nw *network) apply(id NodeID, rd Ready) {
	nw.t.Helper()
	if rd.Snapshot != nil {
		// Install: the test state machine's history is replaced by the snapshot point.
		nw.applied[id] = []Entry{{Index: rd.Snapshot.Meta.Index, Term: rd.Snapshot.Meta.Term, Data: []byte("snapshot")}}
	}
	var last uint64
	if ap := nw.applied[id]; len(ap) > 0 {
		last = ap[len(ap)-1].Index
	}
	for _, e := range rd.CommittedEntries {
		switch {
		case e.Index <= last:
			nw.t.Fatalf("node %d handed entry %d (term %d) to apply again: already applied through %d", id, e.Index, e.Term, last)
		case e.Index != last+1:
			nw.t.Fatalf("node %d handed entry %d to apply after %d: entries skipped", id, e.Index, last)
		}
		last = e.Index
	}
	nw.applied[id] = append(nw.applied[id], rd.CommittedEntries...)
}

// deliver delivers the queued messages once (messages they cause are queued for later).
func (nw *network) deliver() bool {
	msgs := nw.inflight
	nw.inflight = nil
	for _, m := range msgs {
		if nw.down[m.From] || nw.down[m.To] || nw.cut[[2]NodeID{m.From, m.To}] || (nw.drop != nil && nw.drop(m)) {
			continue
		}
		n := nw.nodes[m.To]
		if n == nil {
			continue
		}
		if nw.rewrite != nil {
			m = nw.rewrite(m)
		}
		if nw.trace != nil {
			nw.trace(m)
		}
		if err := n.Step(m); err != nil {
			nw.t.Fatalf("step %v on %d: %v", m.Type, m.To, err)
		}
	}
	return len(msgs) > 0
}

// maxReadysPerNode bounds the Readys one node produces without a message delivered in between: a
// core whose HasReady never turns false fails the test instead of hanging it.
const maxReadysPerNode = 1000

// stabilize runs Ready/Advance and delivery until nothing changes.
func (nw *network) stabilize() {
	for i := 0; ; i++ {
		if i > 10000 {
			nw.t.Fatalf("network did not stabilize")
		}
		progressed := false
		for _, id := range nw.ids {
			if nw.down[id] {
				continue
			}
			for k := 0; nw.handleReady(id); k++ {
				if k == maxReadysPerNode {
					nw.t.Fatalf("node %d still has a Ready after %d in a row", id, k)
				}
				progressed = true
			}
		}
		if nw.deliver() {
			progressed = true
		}
		if !progressed {
			return
		}
	}
}

// tick ticks every live node once and stabilizes.
func (nw *network) tick(n int) {
	for range n {
		for _, id := range nw.ids {
			if !nw.down[id] {
				nw.nodes[id].Tick()
			}
		}
		nw.stabilize()
	}
}

// campaign makes id campaign and runs the election to completion.
func (nw *network) campaign(id NodeID) {
	if err := nw.nodes[id].Campaign(); err != nil {
		nw.t.Fatalf("campaign %d: %v", id, err)
	}
	nw.stabilize()
}

func (nw *network) propose(id NodeID, data string) {
	if err := nw.nodes[id].Propose([]byte(data)); err != nil {
		nw.t.Fatalf("propose on %d: %v", id, err)
	}
	nw.stabilize()
}

func (nw *network) status(id NodeID) Status { return nw.nodes[id].Status() }

// leader returns the unique live leader of the highest term, or None.
func (nw *network) leader() NodeID {
	var lead NodeID
	var term uint64
	for _, id := range nw.ids {
		if nw.down[id] {
			continue
		}
		st := nw.status(id)
		if st.SoftState.State == StateLeader && st.HardState.Term >= term {
			lead, term = id, st.HardState.Term
		}
	}
	return lead
}

// appliedData returns the non-empty normal entry payloads id applied, in order.
func (nw *network) appliedData(id NodeID) []string {
	var out []string
	for _, e := range nw.applied[id] {
		if e.Type == EntryNormal && len(e.Data) > 0 && string(e.Data) != "snapshot" {
			out = append(out, string(e.Data))
		}
	}
	return out
}

// checkApplied asserts that no two nodes applied different entries at the same index (State
// Machine Safety, paper Figure 3) and that each node applied indexes in order without gaps.
func (nw *network) checkApplied() {
	nw.t.Helper()
	byIndex := map[uint64]Entry{}
	for _, id := range nw.ids {
		var last uint64
		for i, e := range nw.applied[id] {
			if i > 0 && e.Index != last+1 {
				nw.t.Fatalf("node %d applied index %d after %d", id, e.Index, last)
			}
			last = e.Index
			if string(e.Data) == "snapshot" {
				continue
			}
			if o, ok := byIndex[e.Index]; ok && (o.Term != e.Term || string(o.Data) != string(e.Data)) {
				nw.t.Fatalf("index %d applied as %+v on one node and %+v on node %d", e.Index, o, e, id)
			}
			byIndex[e.Index] = e
		}
	}
}

func (nw *network) String() string {
	s := ""
	for _, id := range nw.ids {
		st := nw.status(id)
		s += fmt.Sprintf("%d: %v term=%d lead=%d commit=%d last=%d\n", id, st.SoftState.State, st.HardState.Term, st.SoftState.Lead, st.HardState.Commit, st.LastIndex)
	}
	return s
}
