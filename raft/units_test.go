package raft

import (
	"errors"
	"slices"
	"testing"
)

// Paper §5.3: an entry is committed once a majority holds it; during joint consensus a majority of
// each half (dissertation §4.3).
func TestQuorumCommittedIndex(t *testing.T) {
	match := map[NodeID]uint64{1: 5, 2: 3, 3: 9, 4: 1, 5: 7}
	f := func(id NodeID) uint64 { return match[id] }
	for _, tc := range []struct {
		in, out []NodeID
		want    uint64
	}{
		{[]NodeID{1}, nil, 5},
		{[]NodeID{1, 2}, nil, 3},
		{[]NodeID{1, 2, 3}, nil, 5},
		{[]NodeID{1, 2, 3, 4}, nil, 3},
		{[]NodeID{1, 2, 3, 4, 5}, nil, 5},
		{[]NodeID{1, 3, 5}, []NodeID{2, 4, 1}, 3},
		{[]NodeID{3, 5}, []NodeID{1, 3}, 5},
		{[]NodeID{1, 2, 3, 6}, nil, 3}, // unknown node 6 has match 0
	} {
		if got := jointCommitted(tc.in, tc.out, f); got != tc.want {
			t.Errorf("in %v out %v: committed %d, want %d", tc.in, tc.out, got, tc.want)
		}
	}
}

func TestQuorumVote(t *testing.T) {
	v := func(m map[NodeID]bool, in, out []NodeID) voteResult { return jointVote(in, out, m) }
	three := []NodeID{1, 2, 3}
	if r := v(map[NodeID]bool{1: true}, three, nil); r != votePending {
		t.Errorf("1 of 3: %v", r)
	}
	if r := v(map[NodeID]bool{1: true, 2: true}, three, nil); r != voteWon {
		t.Errorf("2 of 3: %v", r)
	}
	if r := v(map[NodeID]bool{1: true, 2: false, 3: false}, three, nil); r != voteLost {
		t.Errorf("1 yes 2 no: %v", r)
	}
	// Joint: winning the incoming half is not enough.
	if r := v(map[NodeID]bool{1: true, 4: true, 5: true}, []NodeID{1, 4, 5}, three); r != votePending {
		t.Errorf("joint, only incoming: %v", r)
	}
	if r := v(map[NodeID]bool{1: true, 4: true, 2: true}, []NodeID{1, 4, 5}, three); r != voteWon {
		t.Errorf("joint, both: %v", r)
	}
	if r := v(map[NodeID]bool{2: false, 3: false}, []NodeID{1, 4, 5}, three); r != voteLost {
		t.Errorf("joint, outgoing lost: %v", r)
	}
	if r := v(nil, nil, nil); r != voteWon {
		t.Errorf("empty config: %v", r)
	}
}

func TestInflights(t *testing.T) {
	in := newInflights(3, 250)
	in.add(1, 100)
	in.add(2, 100)
	if in.full() {
		t.Fatal("full at 2 of 3 and 200 of 250 bytes")
	}
	in.add(4, 100)
	if !in.full() {
		t.Fatal("not full at 3 messages / 300 bytes")
	}
	in.freeLE(2)
	if in.count != 1 || in.bytes != 100 || in.full() {
		t.Fatalf("after freeLE(2): count %d bytes %d", in.count, in.bytes)
	}
	// Wrap around the ring.
	for i := uint64(5); i < 20; i++ {
		in.add(i, 1)
		in.freeLE(i - 1)
	}
	if in.count != 1 || in.bytes != 1 {
		t.Fatalf("after wrapping: count %d bytes %d", in.count, in.bytes)
	}
	in.freeFirst()
	if in.count != 0 || in.bytes != 0 {
		t.Fatalf("after freeFirst: count %d bytes %d", in.count, in.bytes)
	}
	bytesOnly := newInflights(100, 0)
	for i := uint64(1); i <= 100; i++ {
		bytesOnly.add(i, 1<<30)
	}
	if !bytesOnly.full() {
		t.Fatal("no byte bound: full only by count")
	}
}

// Progress state transitions (see the progress type).
func TestProgressTransitions(t *testing.T) {
	p := newProgress(11, 2, 0, false)
	// Probe: one append at a time.
	p.sentEntries(12, 2, 40)
	if !p.isPaused() {
		t.Fatal("probe not paused after sending")
	}
	// A stale rejection (for another index) changes nothing.
	if p.maybeDecrTo(5, 3) {
		t.Fatal("stale rejection accepted")
	}
	// The matching rejection moves next back by the hint and unpauses.
	if !p.maybeDecrTo(10, 6) || p.next != 7 || p.isPaused() {
		t.Fatalf("after rejection: next %d paused %v", p.next, p.isPaused())
	}
	if !p.maybeUpdate(8) || p.match != 8 || p.next != 9 {
		t.Fatalf("after ack: %+v", p)
	}
	p.becomeReplicate()
	p.sentEntries(10, 2, 10)
	p.sentEntries(12, 2, 10)
	if p.next != 13 || !p.isPaused() {
		t.Fatalf("replicate: next %d paused %v", p.next, p.isPaused())
	}
	// A rejection at or below match in replicate is stale.
	if p.maybeDecrTo(8, 0) {
		t.Fatal("stale replicate rejection accepted")
	}
	if !p.maybeDecrTo(12, 0) || p.next != 9 {
		t.Fatalf("replicate rejection: next %d", p.next)
	}
	s := &Snapshot{Meta: SnapshotMeta{Index: 20, Term: 3}}
	p.becomeSnapshot(s)
	if !p.isPaused() || p.pendingSnapshot != 20 {
		t.Fatal("snapshot state must pause appends")
	}
	p.becomeProbe()
	if p.next != 21 {
		t.Fatalf("probe after snapshot: next %d, want just after the snapshot", p.next)
	}
}

// Paper §5.3: the follower-side consistency check and conflict handling.
func TestLogMaybeAppend(t *testing.T) {
	mk := func() *raftLog {
		l := &raftLog{}
		l.append(Entry{Index: 1, Term: 1}, Entry{Index: 2, Term: 2}, Entry{Index: 3, Term: 2})
		l.stable = 3
		l.committed = 1
		return l
	}
	l := mk()
	if _, ok := l.maybeAppend(3, 3, 3, nil); ok {
		t.Fatal("accepted a mismatching previous term")
	}
	if _, ok := l.maybeAppend(4, 2, 3, nil); ok {
		t.Fatal("accepted a previous index beyond the log")
	}
	last, ok := l.maybeAppend(1, 1, 9, []Entry{{Index: 2, Term: 2}})
	if !ok || last != 2 || l.lastIndex() != 3 || l.committed != 2 {
		t.Fatalf("duplicate prefix: last %d ok %v lastIndex %d committed %d (must keep entry 3, commit only up to the last new entry)", last, ok, l.lastIndex(), l.committed)
	}
	last, ok = l.maybeAppend(2, 2, 2, []Entry{{Index: 3, Term: 3}, {Index: 4, Term: 3}})
	if !ok || last != 4 || l.stable != 2 {
		t.Fatalf("conflict: last %d ok %v stable %d (the conflicting entry must be rewritten)", last, ok, l.stable)
	}
	if got := l.unstableEntries(); len(got) != 2 || got[0].Index != 3 || got[0].Term != 3 {
		t.Fatalf("unstable %+v", got)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("overwriting a committed entry did not panic")
			}
		}()
		l.maybeAppend(1, 1, 1, []Entry{{Index: 2, Term: 9}})
	}()
}

func TestLogFindConflictByTerm(t *testing.T) {
	l := &raftLog{snap: Snapshot{Meta: SnapshotMeta{Index: 2, Term: 1}}}
	l.append(Entry{Index: 3, Term: 2}, Entry{Index: 4, Term: 4}, Entry{Index: 5, Term: 4}, Entry{Index: 6, Term: 5})
	for _, tc := range []struct{ index, term, wantI, wantT uint64 }{
		{6, 5, 6, 5},
		{6, 4, 5, 4},
		{6, 3, 3, 2},
		{9, 9, 6, 5}, // beyond the log: start at the last index
		{6, 1, 2, 1}, // down to the snapshot
	} {
		i, tt := l.findConflictByTerm(tc.index, tc.term)
		if i != tc.wantI || tt != tc.wantT {
			t.Errorf("findConflictByTerm(%d, %d) = %d/%d, want %d/%d", tc.index, tc.term, i, tt, tc.wantI, tc.wantT)
		}
	}
	if _, err := l.term(1); !errors.Is(err, ErrCompacted) {
		t.Errorf("term before the snapshot: %v", err)
	}
	if _, err := l.slice(2, 4, 100); !errors.Is(err, ErrCompacted) {
		t.Errorf("slice into the snapshot: %v", err)
	}
}

func TestLogSliceLimit(t *testing.T) {
	l := &raftLog{}
	for i := uint64(1); i <= 5; i++ {
		l.append(Entry{Index: i, Term: 1, Data: make([]byte, 10)})
	}
	size := uint64(10 + entryHeaderBytes)
	for _, tc := range []struct {
		max  uint64
		want int
	}{{1, 1}, {size, 1}, {2*size - 1, 1}, {2 * size, 2}, {1 << 20, 5}} {
		ents, err := l.slice(1, 6, tc.max)
		if err != nil || len(ents) != tc.want {
			t.Errorf("slice max %d: %d entries (%v), want %d", tc.max, len(ents), err, tc.want)
		}
	}
	ents, _ := l.slice(1, 3, 1<<20)
	ents = append(ents, Entry{Index: 99})
	if l.entries[2].Index != 3 {
		t.Fatal("appending to a slice overwrote the log")
	}
}

func TestReadOnlyQueue(t *testing.T) {
	ro := newReadOnly()
	ro.add(5, 1, []byte("a"))
	ro.add(6, 2, []byte("b"))
	ro.add(7, 1, []byte("a")) // duplicate context ignored
	if ro.len() != 2 || string(ro.lastPendingCtx()) != "b" {
		t.Fatalf("len %d last %q", ro.len(), ro.lastPendingCtx())
	}
	if acks := ro.recvAck(3, []byte("zz")); acks != nil {
		t.Fatal("ack for an unknown context")
	}
	ro.recvAck(3, []byte("b"))
	got := ro.advance([]byte("b"))
	if len(got) != 2 || got[0].index != 5 || got[1].index != 6 || ro.len() != 0 {
		t.Fatalf("advance: %+v", got)
	}
}

func TestMembershipFromConfStateValidation(t *testing.T) {
	for name, cs := range map[string]ConfState{
		"learner and voter":         {Voters: []NodeID{1, 2}, Learners: []NodeID{2}},
		"zero id":                   {Voters: []NodeID{0, 1}},
		"next learner not outgoing": {Voters: []NodeID{1}, VotersOutgoing: []NodeID{1, 2}, LearnersNext: []NodeID{3}},
		"auto leave not joint":      {Voters: []NodeID{1}, AutoLeave: true},
	} {
		if _, err := membershipFromConfState(cs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, err := membershipFromConfState(ConfState{Voters: []NodeID{3, 1, 2, 1}})
	if err != nil || !slices.Equal(m.voters, []NodeID{1, 2, 3}) {
		t.Fatalf("%+v %v", m, err)
	}
}
