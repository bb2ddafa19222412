package sim

import (
	"fmt"

	"github.com/caucus/caucus/raft"
)

// Kind names the invariant a Violation breaks.
type Kind string

const (
	ElectionSafety     Kind = "election-safety"
	LogMatching        Kind = "log-matching"
	LeaderCompleteness Kind = "leader-completeness"
	StateMachineSafety Kind = "state-machine-safety"
	Linearizability    Kind = "read-linearizability"
	AckDurability      Kind = "ack-before-persist"
	Liveness           Kind = "liveness"
	// ApplyOrder: a member's state machine was handed an entry it had already applied, or one
	// that skips entries, or a snapshot older than what it had applied: state machine safety
	// within one member, checked at each application.
	ApplyOrder Kind = "apply-order"
	// CoreContract: the core broke its documented interface (inconsistent state to persist, a
	// durable state New rejects, a Ready that never drains).
	CoreContract Kind = "core-contract"
	// StorageFault: a Storage failed to persist or to recover what it had made durable.
	StorageFault Kind = "storage"
	// CorePanic: the core (or the simulator) panicked.
	CorePanic Kind = "panic"
)

// Violation is a broken invariant, with what is needed to replay it.
type Violation struct {
	Kind   Kind
	Seed   uint64
	Tick   uint64
	Detail string
	Replay string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("%s violation at tick %d (seed %d): %s\nreplay: %s", v.Kind, v.Tick, v.Seed, v.Detail, v.Replay)
}

type entryKey struct{ index, term uint64 }

type entryRec struct {
	hash     uint64
	prevTerm uint64
	node     raft.NodeID // the first node seen holding it, for the report
}

type appliedRec struct {
	term   uint64
	hash   uint64
	digest uint64 // state machine digest after applying this index
	node   raft.NodeID
	set    bool
}

// applyEvent records that an entry was applied by a node whose term was obsTerm. The entry was
// committed in a term <= obsTerm (a node learns a commit index from a leader of its current term
// or earlier), so every leader of a term > obsTerm must hold it (leader completeness).
type applyEvent struct {
	index, term, hash, obsTerm uint64
}

// checker holds the global record of the run that the invariants are checked against. It
// outlives every crash: it is the omniscient observer, not part of any node.
type checker struct {
	leaders map[uint64]raft.NodeID
	entries map[entryKey]entryRec
	applied []appliedRec // by index
	minObs  []uint64     // by index: lowest obsTerm recorded in events (0 = none)
	events  []applyEvent
	// maxAcked is the highest log index of a write acknowledged to its client so far.
	maxAcked uint64
}

func newChecker() *checker {
	return &checker{leaders: map[uint64]raft.NodeID{}, entries: map[entryKey]entryRec{}}
}

// leader records that id acts as leader of term. It returns a description of the violation, or "".
func (c *checker) leader(term uint64, id raft.NodeID, how string) string {
	if prev, ok := c.leaders[term]; ok && prev != id {
		return fmt.Sprintf("two leaders in term %d: node %d and node %d (%s)", term, prev, id, how)
	}
	c.leaders[term] = id
	return ""
}

// persisted checks the entries node id just wrote (made durable, or written for a later sync)
// against every log written so far: an (index, term) pair must always name the same content
// and the same predecessor term, which by induction makes logs that share an (index, term)
// identical up to it (Log Matching). termAt gives the terms of the node's log as written.
func (c *checker) persisted(id raft.NodeID, termAt func(uint64) (uint64, bool), ents []raft.Entry) string {
	for _, e := range ents {
		prev := uint64(0)
		if e.Index > 1 {
			t, ok := termAt(e.Index - 1)
			if !ok {
				return fmt.Sprintf("node %d persisted entry %d but holds no term for %d", id, e.Index, e.Index-1)
			}
			prev = t
		}
		k := entryKey{e.Index, e.Term}
		r := entryRec{hash: entryHash(e), prevTerm: prev, node: id}
		if old, ok := c.entries[k]; ok {
			if old.hash != r.hash {
				return fmt.Sprintf("entry %d@%d differs between node %d and node %d", e.Index, e.Term, old.node, id)
			}
			if old.prevTerm != r.prevTerm {
				return fmt.Sprintf("entry %d@%d follows term %d on node %d but term %d on node %d",
					e.Index, e.Term, old.prevTerm, old.node, prev, id)
			}
			continue
		}
		c.entries[k] = r
	}
	return ""
}

func (c *checker) grow(i uint64) {
	for uint64(len(c.applied)) <= i {
		c.applied = append(c.applied, appliedRec{})
		c.minObs = append(c.minObs, 0)
	}
}

// applyNext checks that a member whose state machine has applied through last is handed next:
// exactly the following entry, never one applied already nor one past a gap. Across a restart,
// last is the index of the snapshot the state machine was restored from.
func applyNext(id raft.NodeID, last, next uint64) string {
	switch {
	case next <= last:
		return fmt.Sprintf("node %d applies entry %d again: its state machine has applied through %d", id, next, last)
	case next != last+1:
		return fmt.Sprintf("node %d applies entry %d after %d: entries %d..%d skipped", id, next, last, last+1, next-1)
	}
	return ""
}

// apply checks that node id, at term obsTerm, applying e (leaving its state machine at digest) agrees
// with every earlier application of that index.
func (c *checker) apply(id raft.NodeID, obsTerm uint64, e raft.Entry, digest uint64) string {
	c.grow(e.Index)
	h := entryHash(e)
	r := &c.applied[e.Index]
	if !r.set {
		*r = appliedRec{term: e.Term, hash: h, digest: digest, node: id, set: true}
	} else {
		if r.term != e.Term || r.hash != h {
			return fmt.Sprintf("index %d applied as term %d (%s) on node %d but as term %d (%s) on node %d",
				e.Index, r.term, "hash "+fmt.Sprint(r.hash), r.node, e.Term, "hash "+fmt.Sprint(h), id)
		}
		if r.digest != digest {
			return fmt.Sprintf("state machine digest after index %d is %x on node %d but %x on node %d",
				e.Index, r.digest, r.node, digest, id)
		}
	}
	if m := c.minObs[e.Index]; m == 0 || obsTerm < m {
		c.minObs[e.Index] = obsTerm
		c.events = append(c.events, applyEvent{index: e.Index, term: e.Term, hash: h, obsTerm: obsTerm})
	}
	return ""
}

// image checks a state machine image installed from a snapshot against the global record.
func (c *checker) image(id raft.NodeID, applied, digest uint64) string {
	if applied < uint64(len(c.applied)) && c.applied[applied].set {
		if r := c.applied[applied]; r.digest != digest {
			return fmt.Sprintf("snapshot installed on node %d at index %d has digest %x but node %d's state there was %x",
				id, applied, digest, r.node, r.digest)
		}
		return ""
	}
	return fmt.Sprintf("node %d installed a snapshot at index %d that no state machine ever reached", id, applied)
}

// leaderHolds checks, from event cursor on, that leader id of term holds every entry applied by
// a node whose term was lower. Leaders never remove entries from their own log, so entries
// checked once need not be checked again while the node leads in this term. It returns the new
// cursor.
func (c *checker) leaderHolds(id raft.NodeID, term uint64, st Storage, cursor int) (int, string) {
	snap := st.SnapshotMeta().Index
	for ; cursor < len(c.events); cursor++ {
		ev := c.events[cursor]
		if ev.obsTerm >= term || ev.index <= snap {
			continue
		}
		e, ok := st.Entry(ev.index)
		if !ok {
			return cursor, fmt.Sprintf("leader %d of term %d lacks entry %d@%d, applied in term <= %d (its log ends at %d)",
				id, term, ev.index, ev.term, ev.obsTerm, st.LastIndex())
		}
		if e.Term != ev.term || entryHash(e) != ev.hash {
			return cursor, fmt.Sprintf("leader %d of term %d holds %d@%d where %d@%d was applied in term <= %d",
				id, term, e.Index, e.Term, ev.index, ev.term, ev.obsTerm)
		}
	}
	return cursor, ""
}
