package sim

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/caucus/caucus/raft"
)

// Storage is one simulated node's durable state: exactly what survives a crash. It is the seam
// where a different durability implementation (for example internal/wal over internal/vfs's
// simulated disk) plugs into the simulator: the simulator only ever persists through Save and
// SaveSnapshot, restarts from Load, tells the store about crashes with Crash, and its checkers
// read the durable log through the accessors.
//
// Once Save returns nil, everything it was given must survive any later Crash (the contract's
// step 2): the simulator sends the acknowledgements of MessagesAfterPersist only then. A crash
// before that point may keep none, all or a prefix of the Save, as a real disk would; a store
// that exposes such crashes implements SaveCrasher. The accessors (HardState, LastIndex, Term,
// Entry) describe only what is durable, because the checkers judge acknowledgements by them.
type Storage interface {
	// Save persists one Ready's HardState (unless empty), Snapshot (unless nil; it replaces the
	// whole log) and Entries (truncating the log at Entries[0].Index first).
	Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry) error
	// SaveSnapshot persists a snapshot the local state machine captured and drops the log
	// entries it covers, keeping the ones after it.
	SaveSnapshot(snap raft.Snapshot) error
	// Load returns what a restarting node hands to raft.New.
	Load() raft.PersistentState
	// Crash discards anything not yet durable and recovers what is, as a restarting process
	// would. An error means the store could not recover its durable state; the simulator
	// reports it as a StorageFault violation.
	Crash() error

	HardState() raft.HardState
	SnapshotMeta() raft.SnapshotMeta
	LastIndex() uint64
	// Term returns the term of the entry at i, or of the snapshot if i is its index.
	Term(i uint64) (uint64, bool)
	// Entry returns the durable entry at i (not covered by the snapshot).
	Entry(i uint64) (raft.Entry, bool)
}

// ErrPowerLoss is wrapped by the error of a Save during which the store's simulated machine lost
// power (see SaveCrasher). The simulator then crashes the node instead of reporting a violation;
// the store's Crash recovers whatever part of the Save reached the disk.
var ErrPowerLoss = errors.New("sim: power lost during save")

// SaveCrasher is implemented by a Storage that can lose power partway through a Save, for
// example between the write and the fsync of its log, or in the middle of a write. The
// simulator asks for it only where it would otherwise crash right after the Save, so that the
// crash rates of a seed's swarm keep their meaning.
type SaveCrasher interface {
	// CrashInNextSave may arm a power loss at a point of the next Save of the store's own
	// (seeded, deterministic) choosing and reports whether it did. An armed Save returns an
	// error wrapping ErrPowerLoss if the power loss struck, and disarms otherwise.
	CrashInNextSave() bool
}

// SnapshotCrasher is implemented by a Storage that can lose power partway through a local
// SaveSnapshot: while the snapshot file is written or renamed, around the WAL marker, or while
// the log segments it covers are released. The simulator asks before a local snapshot, while
// faults are on and the seed's swarm crashes nodes at all.
type SnapshotCrasher interface {
	// CrashInNextSnapshot may arm a power loss inside the next SaveSnapshot (the store's own
	// seeded choice) and reports whether it did. An armed SaveSnapshot returns an error
	// wrapping ErrPowerLoss if the power loss struck, and disarms otherwise.
	CrashInNextSnapshot() bool
}

// memStore is the in-memory Storage: every Save is durable at once, as if fsynced.
type memStore struct {
	hs   raft.HardState
	snap raft.Snapshot
	ents []raft.Entry // ents[k].Index == snap.Meta.Index+1+k
}

var errStore = errors.New("sim: store")

func newMemStore() *memStore { return &memStore{} }

// NewMemStorage returns the simulator's default Storage: in memory, every Save durable at once.
// Other Storage implementations can use it as the reference to compare their recovered state
// against.
func NewMemStorage() Storage { return newMemStore() }

func (m *memStore) Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry) error {
	if snap != nil && !snap.IsEmpty() {
		if snap.Meta.Index < m.snap.Meta.Index {
			return fmt.Errorf("%w: snapshot at %d is older than the durable one at %d", errStore, snap.Meta.Index, m.snap.Meta.Index)
		}
		// InstallSnapshot (paper Figure 13, steps 6-7): entries after the snapshot survive only
		// if the log holds the snapshot's last entry with the same term. Keeping them is never
		// wrong (they match the leader's log by Log Matching), whereas dropping entries a core
		// still holds would lose acknowledged writes.
		t, ok := m.Term(snap.Meta.Index)
		switch {
		case snap.Meta.Index == m.snap.Meta.Index && snap.Meta.Term != m.snap.Meta.Term:
			return fmt.Errorf("%w: snapshot at %d has term %d, the durable one term %d", errStore, snap.Meta.Index, snap.Meta.Term, m.snap.Meta.Term)
		case ok && t == snap.Meta.Term:
			m.ents = append([]raft.Entry(nil), m.ents[snap.Meta.Index-m.snap.Meta.Index:]...)
		default:
			m.ents = nil
		}
		m.snap = cloneSnapshot(*snap)
	}
	if len(ents) > 0 {
		first := ents[0].Index
		if first <= m.snap.Meta.Index {
			return fmt.Errorf("%w: entries from %d overwrite the snapshot at %d", errStore, first, m.snap.Meta.Index)
		}
		if first > m.LastIndex()+1 {
			return fmt.Errorf("%w: entries from %d leave a gap after the last index %d", errStore, first, m.LastIndex())
		}
		m.ents = m.ents[:first-m.snap.Meta.Index-1]
		for k, e := range ents {
			if e.Index != first+uint64(k) {
				return fmt.Errorf("%w: entries not contiguous: %d at position %d after %d", errStore, e.Index, k, first)
			}
			e.Data = bytes.Clone(e.Data)
			m.ents = append(m.ents, e)
		}
	}
	if !hs.IsEmpty() {
		m.hs = hs
	}
	return nil
}

func (m *memStore) SaveSnapshot(snap raft.Snapshot) error {
	idx := snap.Meta.Index
	if idx <= m.snap.Meta.Index {
		return nil // an older or equal image adds nothing
	}
	if idx > m.LastIndex() {
		return fmt.Errorf("%w: local snapshot at %d is beyond the durable log's last index %d", errStore, idx, m.LastIndex())
	}
	keep := m.ents[idx-m.snap.Meta.Index:]
	m.ents = append([]raft.Entry(nil), keep...)
	m.snap = cloneSnapshot(snap)
	return nil
}

func (m *memStore) Load() raft.PersistentState {
	ps := raft.PersistentState{HardState: m.hs}
	if !m.snap.IsEmpty() {
		s := cloneSnapshot(m.snap)
		ps.Snapshot = &s
	}
	if len(m.ents) > 0 {
		ps.Entries = make([]raft.Entry, len(m.ents))
		for k, e := range m.ents {
			e.Data = bytes.Clone(e.Data)
			ps.Entries[k] = e
		}
	}
	return ps
}

func (m *memStore) Crash() error { return nil }

func (m *memStore) HardState() raft.HardState       { return m.hs }
func (m *memStore) SnapshotMeta() raft.SnapshotMeta { return m.snap.Meta }
func (m *memStore) LastIndex() uint64               { return m.snap.Meta.Index + uint64(len(m.ents)) }

func (m *memStore) Term(i uint64) (uint64, bool) {
	if i == m.snap.Meta.Index {
		return m.snap.Meta.Term, true
	}
	e, ok := m.Entry(i)
	return e.Term, ok
}

func (m *memStore) Entry(i uint64) (raft.Entry, bool) {
	if i <= m.snap.Meta.Index || i > m.LastIndex() {
		return raft.Entry{}, false
	}
	return m.ents[i-m.snap.Meta.Index-1], true
}

func cloneConfState(cs raft.ConfState) raft.ConfState {
	return raft.ConfState{
		Voters:         slices.Clone(cs.Voters),
		VotersOutgoing: slices.Clone(cs.VotersOutgoing),
		Learners:       slices.Clone(cs.Learners),
		LearnersNext:   slices.Clone(cs.LearnersNext),
		AutoLeave:      cs.AutoLeave,
	}
}

func cloneSnapshot(s raft.Snapshot) raft.Snapshot {
	s.Meta.ConfState = cloneConfState(s.Meta.ConfState)
	s.Data = bytes.Clone(s.Data)
	return s
}

// cloneMessage deep-copies m so that no two nodes (and no node and the network) share memory: a
// core that mutated a slice it received must not be able to corrupt another node's state and
// hide or fake a bug.
func cloneMessage(m raft.Message) raft.Message {
	c := m
	if m.Entries != nil {
		c.Entries = make([]raft.Entry, len(m.Entries))
		for k, e := range m.Entries {
			e.Data = bytes.Clone(e.Data)
			c.Entries[k] = e
		}
	}
	if m.Snapshot != nil {
		meta := *m.Snapshot
		meta.ConfState = cloneConfState(meta.ConfState)
		c.Snapshot = &meta
	}
	if m.Chunk != nil {
		ch := *m.Chunk
		ch.Data = bytes.Clone(ch.Data)
		c.Chunk = &ch
	}
	c.Context = bytes.Clone(m.Context)
	return c
}
