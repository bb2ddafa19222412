//go:build !nocaucus

package raftbench

import (
	"fmt"
	"log/slog"

	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// caucusNode is one caucus raft.Node with the in-memory log that stands in for its WAL.
type caucusNode struct {
	n        *raft.Node
	log      memLog
	hs       raft.HardState
	lead     raft.NodeID
	applied  uint64
	snapshot uint64 // applied index at the last compaction
}

type caucusCluster struct {
	opts  Options
	nodes [numNodes]*caucusNode
	conf  raft.ConfState
	// buf and wal are reused encode buffers for Wire mode (message and WAL record).
	buf, wal []byte
}

func newCaucusCluster(opts Options) (*caucusCluster, error) {
	voters := []raft.NodeID{1, 2, 3}
	c := &caucusCluster{opts: opts, conf: raft.ConfState{Voters: voters}}
	logger := slog.New(slog.DiscardHandler)
	for i := range c.nodes {
		cfg := raft.DefaultConfig(raft.NodeID(i + 1))
		cfg.ElectionTick = electionTick
		cfg.HeartbeatTick = heartbeatTick
		cfg.PreVote = true
		cfg.CheckQuorum = true
		cfg.ReadOnlyOption = raft.ReadOnlySafe
		cfg.MaxMsgBytes = maxMsgBytes
		cfg.MaxInflightMsgs = maxInflightMsgs
		cfg.MaxInflightBytes = maxInflightBytes
		cfg.MaxUncommittedEntriesBytes = maxUncommitted
		cfg.InitialVoters = voters
		cfg.Logger = logger
		n, err := raft.New(cfg, raft.PersistentState{})
		if err != nil {
			return nil, err
		}
		c.nodes[i] = &caucusNode{n: n}
	}
	return c, nil
}

func (c *caucusCluster) campaign(i int) error { return c.nodes[i].n.Campaign() }

func (c *caucusCluster) leader() int {
	for i, n := range c.nodes {
		if n.lead == raft.NodeID(i+1) {
			return i
		}
	}
	return -1
}

func (c *caucusCluster) propose(i int, data []byte) error { return c.nodes[i].n.Propose(data) }

func (c *caucusCluster) appliedIndexes() []uint64 {
	out := make([]uint64, numNodes)
	for i, n := range c.nodes {
		out[i] = n.applied
	}
	return out
}

func (c *caucusCluster) round(counted int) (applied int, busy bool, err error) {
	for i, n := range c.nodes {
		if !n.n.HasReady() {
			continue
		}
		busy = true
		a, err := c.handle(n, i == counted)
		if err != nil {
			return applied, busy, fmt.Errorf("node %d: %w", i+1, err)
		}
		applied += a
	}
	return applied, busy, nil
}

// handle processes one Ready in the order documented on raft.Ready: send Messages, persist,
// send MessagesAfterPersist, apply, Advance.
func (c *caucusCluster) handle(n *caucusNode, count bool) (int, error) {
	rd := n.n.Ready()
	if rd.SoftState != nil {
		n.lead = rd.SoftState.Lead
	}
	for i := range rd.Messages {
		if err := c.send(&rd.Messages[i]); err != nil {
			return 0, err
		}
	}
	if c.opts.Wire {
		c.wal = c.wal[:0]
		if !rd.HardState.IsEmpty() {
			c.wal = wire.AppendHardState(c.wal, &rd.HardState)
		}
		for i := range rd.Entries {
			c.wal = wire.AppendEntry(c.wal, &rd.Entries[i])
		}
	}
	if !rd.HardState.IsEmpty() {
		n.hs = rd.HardState
	}
	if !rd.Snapshot.IsEmpty() {
		n.log.reset(rd.Snapshot.Meta.Index, rd.Snapshot.Meta.Term)
	}
	if err := n.log.append(rd.Entries); err != nil {
		return 0, err
	}
	for i := range rd.MessagesAfterPersist {
		if err := c.send(&rd.MessagesAfterPersist[i]); err != nil {
			return 0, err
		}
	}
	applied := 0
	for i := range rd.CommittedEntries {
		e := &rd.CommittedEntries[i]
		n.applied = e.Index
		if e.Type == raft.EntryNormal && len(e.Data) > 0 {
			applied++
		}
	}
	n.n.Advance(rd)
	if err := c.maybeCompact(n); err != nil {
		return 0, err
	}
	if !count {
		applied = 0
	}
	return applied, nil
}

// maybeCompact mirrors the etcd side: every CompactEvery applied entries, hand the core a
// snapshot (empty data) at applied-KeepEntries and drop the in-memory log up to it, so that
// KeepEntries entries stay available to followers, as etcd's server keeps them.
func (c *caucusCluster) maybeCompact(n *caucusNode) error {
	if n.applied-n.snapshot < c.opts.CompactEvery {
		return nil
	}
	at := n.applied - c.opts.KeepEntries
	term, ok := n.log.term(at)
	if !ok {
		return fmt.Errorf("compact at %d: entry not in the log [%d, %d]", at, n.log.first(), n.log.last())
	}
	snap := raft.Snapshot{Meta: raft.SnapshotMeta{Index: at, Term: term, ConfState: c.conf}}
	if err := n.n.Compact(snap); err != nil {
		return err
	}
	n.snapshot = n.applied
	n.log.compact(at)
	return nil
}

func (c *caucusCluster) send(m *raft.Message) error {
	if c.opts.Wire {
		c.buf = wire.AppendMessage(c.buf[:0], m)
		dm, _, err := wire.DecodeMessage(c.buf)
		if err != nil {
			return err
		}
		m = &dm
	}
	if m.To < 1 || m.To > numNodes {
		return fmt.Errorf("message %v to unknown node %d", m.Type, m.To)
	}
	return c.nodes[m.To-1].n.Step(*m)
}

// memLog is the in-memory stand-in for a caucus WAL, with MemoryStorage's semantics: entries
// after a compaction point, later entries overwrite a suffix, compaction copies the tail into a
// fresh slice (so entries handed out earlier stay valid).
type memLog struct {
	base     uint64 // index of the entry before ents[0] (the compaction point)
	baseTerm uint64
	ents     []raft.Entry
}

func (l *memLog) first() uint64 { return l.base + 1 }
func (l *memLog) last() uint64  { return l.base + uint64(len(l.ents)) }

func (l *memLog) term(i uint64) (uint64, bool) {
	switch {
	case i == l.base:
		return l.baseTerm, true
	case i < l.base || i > l.last():
		return 0, false
	}
	return l.ents[i-l.base-1].Term, true
}

func (l *memLog) append(ents []raft.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	at := ents[0].Index
	if at <= l.base || at > l.last()+1 {
		return fmt.Errorf("append at %d to log [%d, %d]", at, l.first(), l.last())
	}
	off := at - l.base - 1
	if off == uint64(len(l.ents)) {
		l.ents = append(l.ents, ents...)
		return nil
	}
	// Overwriting a suffix: full slice expression so that entries handed out earlier are never
	// rewritten in place, as MemoryStorage.Append.
	l.ents = append(l.ents[:off:off], ents...)
	return nil
}

func (l *memLog) compact(at uint64) {
	if at <= l.base {
		return
	}
	term, _ := l.term(at)
	rest := l.ents[at-l.base:]
	l.ents = append(make([]raft.Entry, 0, len(rest)), rest...)
	l.base, l.baseTerm = at, term
}

func (l *memLog) reset(index, term uint64) {
	l.base, l.baseTerm, l.ents = index, term, nil
}
