package raft

import (
	"errors"
	"fmt"
)

// entryHeaderBytes approximates the fixed cost of an entry (term, index, type) when sizing
// messages, so that a run of empty entries (no-ops) still counts against MaxMsgBytes and
// MaxInflightBytes.
const entryHeaderBytes = 17

// entrySize is an entry's size for the message and inflight byte limits.
func entrySize(e *Entry) uint64 { return uint64(len(e.Data)) + entryHeaderBytes }

// payloadSize is an entry's size for MaxUncommittedEntriesBytes. Only Data counts, as etcd does,
// so that the leader's empty no-op never counts against a new leader's budget.
func payloadSize(e *Entry) uint64 { return uint64(len(e.Data)) }

// errUnavailable: the index is beyond the last entry.
var errUnavailable = errors.New("raft: requested index is beyond the last entry")

// raftLog is the core's in-memory log: the latest snapshot plus every entry after it.
//
//	snap.Meta.Index < applied <= committed <= lastIndex   (applied may trail snap while a
//	                                                      received snapshot awaits install)
//	entries after stable have not been persisted by the caller yet (Ready.Entries)
//
// The caller persists the same entries (its WAL) but the core never reads them back except
// through New; see doc.go.
type raftLog struct {
	// snap is the latest snapshot: every entry at or before snap.Meta.Index is compacted. Its Data
	// is kept because a leader sends it to followers that fall behind the compaction point.
	snap Snapshot
	// entries[i].Index == snap.Meta.Index+1+i.
	entries []Entry
	// committed is the highest index known to be committed (paper Figure 2, commitIndex).
	committed uint64
	// applied is the highest index handed out in Ready.CommittedEntries and acknowledged by
	// Advance (Figure 2, lastApplied).
	applied uint64
	// stable is the highest index the caller has persisted. Entries after it go out in
	// Ready.Entries.
	stable uint64
	// durable is the highest index the caller has synced (durable <= stable). The two differ
	// only under Config.DeferLeaderSync, between a leader's unsynced write and its sync.
	durable uint64
	// pendingSnap is a snapshot received from the leader that the caller has not yet persisted
	// and installed (Ready.Snapshot).
	pendingSnap *Snapshot
	// tolerateViolations is set when a planted bug (Config.Bugs) is active. The bugs break the
	// protocol on purpose, which can drive the log into states (a committed entry overwritten) that
	// otherwise panic; the simulator must see the consequences through its checkers rather than a
	// crash of the core.
	tolerateViolations bool
}

func (l *raftLog) firstIndex() uint64 { return l.snap.Meta.Index + 1 }
func (l *raftLog) lastIndex() uint64  { return l.snap.Meta.Index + uint64(len(l.entries)) }

func (l *raftLog) lastTerm() uint64 {
	t, err := l.term(l.lastIndex())
	if err != nil {
		panic(fmt.Sprintf("raft: term of last index %d unavailable: %v", l.lastIndex(), err))
	}
	return t
}

// term returns the term of the entry at index i. The snapshot's last entry has a known term even
// though its entry is gone; index 0 has term 0 (the empty log matches any log at index 0).
func (l *raftLog) term(i uint64) (uint64, error) {
	switch {
	case i == l.snap.Meta.Index:
		return l.snap.Meta.Term, nil
	case i < l.snap.Meta.Index:
		return 0, ErrCompacted
	case i > l.lastIndex():
		return 0, errUnavailable
	}
	return l.entries[i-l.snap.Meta.Index-1].Term, nil
}

func (l *raftLog) matchTerm(i, t uint64) bool {
	tt, err := l.term(i)
	return err == nil && tt == t
}

// isUpToDate implements the election restriction (paper §5.4.1): a candidate's log is at least
// as up-to-date as ours if its last term is higher, or equal with an index at least as high.
func (l *raftLog) isUpToDate(lastIndex, lastTerm uint64) bool {
	lt := l.lastTerm()
	return lastTerm > lt || (lastTerm == lt && lastIndex >= l.lastIndex())
}

// entry returns the entry at index i, which must be in the log.
func (l *raftLog) entry(i uint64) *Entry {
	if i < l.firstIndex() || i > l.lastIndex() {
		panic(fmt.Sprintf("raft: entry %d outside the log [%d, %d]", i, l.firstIndex(), l.lastIndex()))
	}
	return &l.entries[i-l.firstIndex()]
}

// slice returns the entries in [lo, hi), stopping before the total entrySize exceeds maxBytes
// but always returning at least one entry (a single large entry must still make progress).
func (l *raftLog) slice(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		panic(fmt.Sprintf("raft: slice [%d, %d) beyond last index %d", lo, hi, l.lastIndex()))
	}
	if lo >= hi {
		return nil, nil
	}
	ents := l.entries[lo-l.firstIndex() : hi-l.firstIndex()]
	var size uint64
	for i := range ents {
		size += entrySize(&ents[i])
		if size > maxBytes && i > 0 {
			ents = ents[:i]
			break
		}
	}
	// Full slice expression: a caller appending to the result must not write into the log.
	return ents[:len(ents):len(ents)], nil
}

// findConflict returns the index of the first entry of ents that is not already in the log with
// the same term, or 0 if the log contains all of them (paper Figure 2, AppendEntries step 3).
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index <= index whose term is <= term, with that term.
// Both sides of the fast backtracking optimisation use it (paper §5.3, "the follower can include
// the term of the conflicting entry and the first index it stores for that term"): every entry
// above the returned index has a term greater than term and so cannot match the other log there.
func (l *raftLog) findConflictByTerm(index, term uint64) (uint64, uint64) {
	index = min(index, l.lastIndex())
	for ; index >= l.firstIndex(); index-- {
		t := l.entries[index-l.firstIndex()].Term
		if t <= term {
			return index, t
		}
	}
	// Reached the snapshot: its term is the last we know.
	return l.snap.Meta.Index, l.snap.Meta.Term
}

// maybeAppend is the follower side of AppendEntries (paper Figure 2): if the log matches at
// (prevIndex, prevTerm), drop conflicting entries, append the new ones and advance the commit
// index to min(commit, last new entry). It returns the index of the last new entry.
func (l *raftLog) maybeAppend(prevIndex, prevTerm, commit uint64, ents []Entry) (uint64, bool) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false
	}
	lastNew := prevIndex + uint64(len(ents))
	if ci := l.findConflict(ents); ci != 0 {
		if ci <= l.committed {
			if !l.tolerateViolations {
				panic(fmt.Sprintf("raft: entry %d conflicts with a committed entry (committed %d)", ci, l.committed))
			}
			l.committed = ci - 1
		}
		l.truncateAndAppend(ents[ci-prevIndex-1:])
	}
	l.commitTo(min(commit, lastNew))
	return lastNew, true
}

// append adds entries after the last index (the leader's own proposals).
func (l *raftLog) append(ents ...Entry) {
	if len(ents) == 0 {
		return
	}
	if ents[0].Index != l.lastIndex()+1 {
		panic(fmt.Sprintf("raft: append at %d, want %d", ents[0].Index, l.lastIndex()+1))
	}
	l.entries = append(l.entries, ents...)
}

// truncateAndAppend replaces everything from ents[0].Index on with ents.
func (l *raftLog) truncateAndAppend(ents []Entry) {
	after := ents[0].Index
	switch {
	case after == l.lastIndex()+1:
		l.entries = append(l.entries, ents...)
	case after <= l.snap.Meta.Index:
		panic(fmt.Sprintf("raft: truncate at %d, before the snapshot at %d", after, l.snap.Meta.Index))
	default:
		// Full slice expression: force a copy, because Ready handed the caller slices of the old
		// backing array and it may still hold them.
		keep := l.entries[:after-l.firstIndex()]
		l.entries = append(keep[:len(keep):len(keep)], ents...)
		// The replaced entries may have been persisted: the caller truncates its WAL at
		// Ready.Entries[0].Index.
		l.stable = min(l.stable, after-1)
		l.durable = min(l.durable, after-1)
	}
}

// commitTo advances the commit index. Commit never moves backwards: a stale leader's lower commit
// is ignored.
func (l *raftLog) commitTo(c uint64) {
	if c <= l.committed {
		return
	}
	if c > l.lastIndex() {
		if !l.tolerateViolations {
			panic(fmt.Sprintf("raft: commit index %d beyond last index %d", c, l.lastIndex()))
		}
		c = l.lastIndex()
	}
	l.committed = c
}

// unstableEntries are the entries the caller has not persisted.
func (l *raftLog) unstableEntries() []Entry {
	if l.stable >= l.lastIndex() {
		return nil
	}
	lo := max(l.stable+1, l.firstIndex())
	ents := l.entries[lo-l.firstIndex():]
	return ents[:len(ents):len(ents)]
}

// nextCommitted returns the entries to hand to the state machine next, bounded by maxBytes (at
// least one). upTo is the last index that may be handed out: committed, or with the
// ApplyBeforeCommit bug the last index.
func (l *raftLog) nextCommitted(upTo, maxBytes uint64) []Entry {
	lo := l.applied + 1
	if l.pendingSnap != nil {
		// The snapshot is installed before CommittedEntries (Ready order), so continue after it.
		lo = max(lo, l.pendingSnap.Meta.Index+1)
	}
	lo = max(lo, l.firstIndex())
	if lo > upTo {
		return nil
	}
	ents, err := l.slice(lo, upTo+1, maxBytes)
	if err != nil {
		panic(fmt.Sprintf("raft: committed entries [%d, %d] unavailable: %v", lo, upTo, err))
	}
	return ents
}

// restore replaces the log with a snapshot received from the leader (paper §7, InstallSnapshot
// step 7: "discard the entire log").
func (l *raftLog) restore(s Snapshot) {
	l.snap = s
	l.entries = nil
	l.committed = s.Meta.Index
	l.stable = s.Meta.Index
	l.durable = min(l.durable, s.Meta.Index)
	l.pendingSnap = &s
}

// compact drops the entries covered by s, a snapshot the state machine took at an applied index.
func (l *raftLog) compact(s Snapshot) error {
	i := s.Meta.Index
	if i <= l.snap.Meta.Index {
		return fmt.Errorf("raft: compact to %d (current snapshot %d): %w", i, l.snap.Meta.Index, ErrSnapshotOutOfDate)
	}
	if i > l.applied || i > l.committed {
		return fmt.Errorf("raft: compact to %d beyond applied %d / committed %d", i, l.applied, l.committed)
	}
	t, err := l.term(i)
	if err != nil {
		return fmt.Errorf("raft: compact to %d: %w", i, err)
	}
	if t != s.Meta.Term {
		return fmt.Errorf("raft: compact to %d: snapshot term %d, log term %d", i, s.Meta.Term, t)
	}
	// Copy the suffix so that the compacted prefix's memory is released.
	rest := l.entries[i-l.firstIndex()+1:]
	l.entries = append([]Entry(nil), rest...)
	l.snap = s
	return nil
}
