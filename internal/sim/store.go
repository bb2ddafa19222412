package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/caucus/caucus/raft"
)

// Storage is one simulated node's durable state: exactly what survives a crash. It is the seam
// where a different durability implementation (for example internal/wal over internal/vfs's
// simulated disk) plugs into the simulator: the simulator only ever persists through Save, Sync
// and SaveSnapshot, restarts from Load, tells the store about crashes with Crash, and its
// checkers read the durable log through the accessors.
//
// Writes are ordered: each Save comes after every earlier one, as records appended to a log.
// A Save with sync is durable once it returns nil, together with every write before it (the
// contract's step 2, an fsync of the whole log): the simulator sends the acknowledgements of
// MessagesAfterPersist only then. A Save without sync (raft.Ready.MustSync false: a HardState
// that only moves the commit index, or, under raft.Config.DeferLeaderSync, a leader's own
// appends) is written but need not be durable until a later Sync, synced Save or SaveSnapshot
// returns. It never carries a snapshot or a new term or vote (those always need MustSync).
//
// A crash keeps every durable write and, of the writes that were not yet, some prefix in write
// order (none, part or all, as a power loss leaves a disk that wrote some dirty pages back); a
// store that also exposes crashes in the middle of a Save implements SaveCrasher. The accessors
// (HardState, LastIndex, Term, Entry) describe only what is durable, because the checkers judge
// acknowledgements by them, and Load, called at a node's first start and after Crash, returns
// only durable state.
type Storage interface {
	// Save writes one Ready's HardState (unless empty), Snapshot (unless nil; it replaces the
	// whole log) and Entries (truncating the log at Entries[0].Index first). With sync, it and
	// every earlier write are durable once it returns nil; without, see Sync.
	Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry, sync bool) error
	// Sync makes every write made before it durable (an fsync of the log). It is how a driver
	// completes the deferred sync of a leader's appends (raft.Node.LeaderSynced).
	Sync() error
	// SaveSnapshot persists a snapshot the local state machine captured and drops the log
	// entries it covers, keeping the ones after it. Like a synced Save it makes every earlier
	// write durable too: the snapshot may cover entries a leader wrote without syncing, because
	// a leader applies what its followers' copies committed.
	SaveSnapshot(snap raft.Snapshot) error
	// Load returns what a restarting node hands to raft.New: the durable state.
	Load() raft.PersistentState
	// Crash discards what is not durable (but for the prefix of unsynced writes a power loss
	// may keep) and recovers what is, as a restarting process would. An error means the store
	// could not recover its durable state; the simulator reports it as a StorageFault violation.
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

// memStore is the in-memory Storage. A synced Save is durable at once. An unsynced one that
// carries entries, or follows an unsynced write, waits in unsynced until a sync; a crash keeps a
// prefix of those writes, of a length drawn from the store's own seed (so that the simulator's
// draws do not depend on it), at the granularity of one entry or one HardState, in the order a
// log on disk holds them: each write's entries, then its HardState.
//
// An unsynced Save that only moves the commit index and follows no unsynced write is durable
// at once, as a disk writing it back immediately would be: that keeps the runs of cores that
// never defer a sync exactly what they were with an always-durable store. (Package walstore
// models the loss of such writes on a real log.)
type memStore struct {
	hs   raft.HardState
	snap raft.Snapshot
	ents []raft.Entry // ents[k].Index == snap.Meta.Index+1+k

	unsynced []memWrite     // written after everything durable, in write order
	whs      raft.HardState // the last HardState written, durable or not
	wlast    uint64         // the last index written, durable or not
	rng      *rand.Rand     // how much of unsynced a crash keeps
}

// memWrite is one unsynced Save (never with a snapshot).
type memWrite struct {
	hs   raft.HardState
	ents []raft.Entry
}

var errStore = errors.New("sim: store")

func newMemStore(seed uint64) *memStore {
	return &memStore{rng: rand.New(rand.NewPCG(seed, 0x3e3e_5707e))}
}

// NewMemStorage returns the simulator's default Storage: in memory, a synced Save durable at
// once, unsynced ones lost (but for a prefix chosen by a fixed seed) at a crash. Other Storage
// implementations can use it as the reference to compare their recovered state against.
func NewMemStorage() Storage { return newMemStore(0) }

func (m *memStore) Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry, sync bool) error {
	if sync {
		if err := m.flush(); err != nil {
			return err
		}
		if err := m.apply(hs, snap, ents); err != nil {
			return err
		}
		m.whs, m.wlast = m.hs, m.LastIndex()
		return nil
	}
	if snap != nil && !snap.IsEmpty() {
		return fmt.Errorf("%w: an unsynced save carries snapshot %d (a snapshot needs MustSync)", errStore, snap.Meta.Index)
	}
	if !hs.IsEmpty() && (hs.Term != m.whs.Term || hs.Vote != m.whs.Vote) {
		return fmt.Errorf("%w: an unsynced save moves term %d vote %d to term %d vote %d (a new term or vote needs MustSync)",
			errStore, m.whs.Term, m.whs.Vote, hs.Term, hs.Vote)
	}
	if len(ents) == 0 && len(m.unsynced) == 0 {
		if err := m.apply(hs, nil, nil); err != nil {
			return err
		}
		m.whs = m.hs
		return nil
	}
	if len(ents) == 0 && hs.IsEmpty() {
		return nil
	}
	if len(ents) > 0 {
		// Checked here against the written log, as apply checks a synced Save against the
		// durable one: a flush or a crash that keeps this write must not fail.
		first := ents[0].Index
		if first <= m.snap.Meta.Index {
			return fmt.Errorf("%w: entries from %d overwrite the snapshot at %d", errStore, first, m.snap.Meta.Index)
		}
		if first > m.wlast+1 {
			return fmt.Errorf("%w: entries from %d leave a gap after the last written index %d", errStore, first, m.wlast)
		}
		for k, e := range ents {
			if e.Index != first+uint64(k) {
				return fmt.Errorf("%w: entries not contiguous: %d at position %d after %d", errStore, e.Index, k, first)
			}
		}
		m.wlast = ents[len(ents)-1].Index
	}
	w := memWrite{hs: hs, ents: make([]raft.Entry, len(ents))}
	for k, e := range ents {
		e.Data = bytes.Clone(e.Data)
		w.ents[k] = e
	}
	m.unsynced = append(m.unsynced, w)
	if !hs.IsEmpty() {
		m.whs = hs
	}
	return nil
}

func (m *memStore) Sync() error { return m.flush() }

// flush makes every unsynced write durable, in order.
func (m *memStore) flush() error {
	for _, w := range m.unsynced {
		if err := m.apply(w.hs, nil, w.ents); err != nil {
			return fmt.Errorf("syncing an earlier write: %w", err)
		}
	}
	m.unsynced = m.unsynced[:0]
	return nil
}

// apply makes one write durable.
func (m *memStore) apply(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry) error {
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
	if err := m.flush(); err != nil {
		return err
	}
	m.whs, m.wlast = m.hs, m.LastIndex()
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

// Crash keeps a seeded prefix of the unsynced writes, one entry or HardState at a time, and
// drops the rest.
func (m *memStore) Crash() error {
	if len(m.unsynced) > 0 {
		steps := 0
		for _, w := range m.unsynced {
			steps += len(w.ents)
			if !w.hs.IsEmpty() {
				steps++
			}
		}
		keep := m.rng.IntN(steps + 1)
		for _, w := range m.unsynced {
			if keep == 0 {
				break
			}
			n := min(keep, len(w.ents))
			keep -= n
			hs := raft.HardState{}
			if keep > 0 && !w.hs.IsEmpty() {
				hs, keep = w.hs, keep-1
			}
			if err := m.apply(hs, nil, w.ents[:n]); err != nil {
				return fmt.Errorf("keeping part of the unsynced writes: %w", err)
			}
		}
		m.unsynced = m.unsynced[:0]
	}
	m.whs, m.wlast = m.hs, m.LastIndex()
	return nil
}

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
