package wal

import (
	"fmt"

	"github.com/caucus/caucus/raft"
)

// logState is the log as the records describe it. Replay applies every record to one; the
// writer keeps one (without entry data) to validate Save and SaveSnapshot against exactly the
// rules replay enforces, so the WAL never writes a sequence it would refuse to read back.
type logState struct {
	// floor is the index of the latest snapshot marker (0 if none): no entry at or below it may
	// be written.
	floor uint64
	// base is the index just before the first tracked entry. For the writer, and for a replay
	// that started at the very first segment, base == floor. A replay that starts at a segment
	// whose predecessors were released starts with base at the segment's firstIndex-1; it only
	// knows the log from there on until a marker at or above base arrives (ReleaseTo guarantees
	// one does).
	base      uint64
	baseTerm  uint64
	baseKnown bool         // whether baseTerm is known (see lowering in append)
	terms     []uint64     // terms[i] is the term of entry base+1+i
	ents      []raft.Entry // parallel to terms, only if keep
	keep      bool
	snap      *raft.SnapshotMeta
	hs        raft.HardState
}

func (s *logState) last() uint64 { return s.base + uint64(len(s.terms)) }

// term returns the term of entry i if the state knows it.
func (s *logState) term(i uint64) (uint64, bool) {
	switch {
	case i == s.base:
		return s.baseTerm, s.baseKnown
	case i > s.base && i <= s.last():
		return s.terms[i-s.base-1], true
	}
	return 0, false
}

// checkAppend reports whether an entry with this index may follow the log: it either extends it
// or overwrites a suffix (Raft's truncation of conflicting entries, paper 5.3).
func (s *logState) checkAppend(index uint64) error {
	if index <= s.floor {
		return fmt.Errorf("entry index %d is at or below the snapshot index %d", index, s.floor)
	}
	if index > s.last()+1 {
		return fmt.Errorf("entry index %d leaves a gap after last index %d", index, s.last())
	}
	return nil
}

// append applies e after checkAppend accepted it, dropping any entries at or after e.Index.
func (s *logState) append(e *raft.Entry) {
	if e.Index <= s.base {
		// Only in a replay that started after released segments: the writer truncated back
		// into the region this replay cannot see. Everything tracked is overwritten.
		s.base = e.Index - 1
		s.baseTerm, s.baseKnown = 0, false
		if s.snap != nil && s.base == s.snap.Index {
			s.baseTerm, s.baseKnown = s.snap.Term, true
		}
		s.terms, s.ents = s.terms[:0], s.ents[:0]
	}
	cut := e.Index - s.base - 1
	s.terms = append(s.terms[:cut], e.Term)
	if s.keep {
		s.ents = append(s.ents[:cut], *e)
	}
}

func (s *logState) checkSnapshot(m *raft.SnapshotMeta) error {
	if s.snap == nil {
		return nil
	}
	if m.Index < s.snap.Index {
		return fmt.Errorf("snapshot marker at index %d is older than the current one at %d", m.Index, s.snap.Index)
	}
	if m.Index == s.snap.Index && m.Term != s.snap.Term {
		return fmt.Errorf("snapshot marker at index %d has term %d, the current one term %d", m.Index, m.Term, s.snap.Term)
	}
	return nil
}

// keepsLog applies the paper's InstallSnapshot rule (Figure 13, steps 6-7): the entries after
// the snapshot survive only if the log holds the snapshot's last entry with the same term. known
// is false when this state cannot tell (the entry is in a released segment).
func (s *logState) keepsLog(m *raft.SnapshotMeta) (keep, known bool) {
	if m.Index > s.last() {
		return false, true
	}
	t, ok := s.term(m.Index)
	if !ok {
		return false, false
	}
	return t == m.Term, true
}

// snapshot applies a marker after checkSnapshot accepted it. keep is the writer's decision
// (keepsLog at write time), recorded in the marker so that a replay which cannot compute it
// still follows it; the caller cross-checks it where keepsLog is known.
func (s *logState) snapshot(m *raft.SnapshotMeta, keep bool) {
	switch {
	case s.snap != nil && m.Index == s.snap.Index:
		// A copy (segment start) or a re-save of the current snapshot: the log is unaffected.
	case keep && m.Index < s.base:
		// The marker's entry is in a released segment and the writer kept the log: the
		// tracked entries stay, the gap up to base must be covered by a later marker.
	case keep:
		k := m.Index - s.base
		s.terms = s.terms[k:]
		if s.keep {
			s.ents = s.ents[k:]
		}
		s.base, s.baseTerm, s.baseKnown = m.Index, m.Term, true
	default:
		s.terms, s.ents = nil, nil
		s.base, s.baseTerm, s.baseKnown = m.Index, m.Term, true
	}
	s.floor = m.Index
	c := cloneMeta(m)
	s.snap = &c
}

func cloneMeta(m *raft.SnapshotMeta) raft.SnapshotMeta {
	c := *m
	cs := &c.ConfState
	cs.Voters = append([]raft.NodeID(nil), cs.Voters...)
	cs.VotersOutgoing = append([]raft.NodeID(nil), cs.VotersOutgoing...)
	cs.Learners = append([]raft.NodeID(nil), cs.Learners...)
	cs.LearnersNext = append([]raft.NodeID(nil), cs.LearnersNext...)
	return c
}
