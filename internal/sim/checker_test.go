package sim

import (
	"strings"
	"testing"

	"github.com/caucus/caucus/raft"
)

// These tests feed the checkers hand-built histories, to show each one fires on the violation it
// exists for and stays quiet on the legal variant.

func ent(i, t uint64, data string) raft.Entry {
	return raft.Entry{Index: i, Term: t, Data: []byte(data)}
}

func TestCheckerElectionSafety(t *testing.T) {
	c := newChecker()
	if msg := c.leader(3, 1, "x"); msg != "" {
		t.Fatal(msg)
	}
	if msg := c.leader(3, 1, "again"); msg != "" {
		t.Fatalf("same leader twice flagged: %s", msg)
	}
	if msg := c.leader(3, 2, "y"); !strings.Contains(msg, "two leaders in term 3") {
		t.Fatalf("second leader in a term not flagged: %q", msg)
	}
}

func TestCheckerLogMatching(t *testing.T) {
	c := newChecker()
	a, b := newMemStore(0), newMemStore(0)
	must(t, a.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}, true))
	if msg := c.persisted(1, a.Term, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}); msg != "" {
		t.Fatal(msg)
	}
	// Same (index, term) with the same content and predecessor: fine.
	must(t, b.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}, true))
	if msg := c.persisted(2, b.Term, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}); msg != "" {
		t.Fatal(msg)
	}
	// Same (index, term), different content.
	d := newMemStore(0)
	must(t, d.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "y")}, true))
	if msg := c.persisted(3, d.Term, []raft.Entry{ent(1, 1, ""), ent(2, 2, "y")}); !strings.Contains(msg, "differs") {
		t.Fatalf("differing entry not flagged: %q", msg)
	}
	// Same (index, term) and content but a different predecessor term: the prefixes differ.
	e := newMemStore(0)
	must(t, e.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 2, ""), ent(2, 2, "x")}, true))
	if msg := c.persisted(4, e.Term, []raft.Entry{ent(2, 2, "x")}); !strings.Contains(msg, "follows term") {
		t.Fatalf("differing prefix not flagged: %q", msg)
	}
}

func TestCheckerStateMachineSafety(t *testing.T) {
	c := newChecker()
	x, y := newKV(), newKV()
	e1 := ent(1, 1, string(encodeWrite("k", "v1")))
	x.apply(e1)
	if msg := c.apply(1, 1, e1, x.digest); msg != "" {
		t.Fatal(msg)
	}
	other := ent(1, 2, string(encodeWrite("k", "v2")))
	y.apply(other)
	if msg := c.apply(2, 2, other, y.digest); !strings.Contains(msg, "index 1 applied as term 1") {
		t.Fatalf("different entries at one index not flagged: %q", msg)
	}
	// A snapshot image whose digest disagrees with what was applied at its index.
	if msg := c.image(3, 1, y.digest); !strings.Contains(msg, "digest") {
		t.Fatalf("bad snapshot image not flagged: %q", msg)
	}
	if msg := c.image(3, 1, x.digest); msg != "" {
		t.Fatal(msg)
	}
}

func TestCheckerLeaderCompleteness(t *testing.T) {
	c := newChecker()
	kvs := newKV()
	e1, e2 := ent(1, 1, "a"), ent(2, 1, "b")
	kvs.apply(e1)
	must(t, errIf(c.apply(1, 1, e1, kvs.digest)))
	kvs.apply(e2)
	// Entry 2 was applied by a node at term 3: only leaders of terms above 3 must hold it.
	must(t, errIf(c.apply(1, 3, e2, kvs.digest)))

	short := newMemStore(0)
	must(t, short.Save(raft.HardState{Term: 2}, nil, []raft.Entry{e1}, true))
	if _, msg := c.leaderHolds(2, 3, short, 0); msg != "" {
		t.Fatalf("leader of term 3 need not hold an entry applied at term 3: %s", msg)
	}
	if _, msg := c.leaderHolds(2, 4, short, 0); !strings.Contains(msg, "lacks entry 2@1") {
		t.Fatalf("leader of term 4 missing a committed entry not flagged: %q", msg)
	}
	wrong := newMemStore(0)
	must(t, wrong.Save(raft.HardState{Term: 4}, nil, []raft.Entry{e1, ent(2, 2, "c")}, true))
	if _, msg := c.leaderHolds(3, 4, wrong, 0); !strings.Contains(msg, "holds 2@2") {
		t.Fatalf("leader holding a different entry not flagged: %q", msg)
	}
	full := newMemStore(0)
	must(t, full.Save(raft.HardState{Term: 4}, nil, []raft.Entry{e1, e2}, true))
	if cur, msg := c.leaderHolds(3, 4, full, 0); msg != "" || cur != len(c.events) {
		t.Fatalf("complete leader flagged (%q) or cursor %d not at %d", msg, cur, len(c.events))
	}
}

func TestMemStoreTruncation(t *testing.T) {
	s := newMemStore(0)
	must(t, s.Save(raft.HardState{Term: 1, Commit: 1}, nil, []raft.Entry{ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 1, "c")}, true))
	// A new leader overwrites from index 2.
	must(t, s.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(2, 2, "x")}, true))
	if s.LastIndex() != 2 {
		t.Fatalf("last index %d after truncating append, want 2", s.LastIndex())
	}
	if e, _ := s.Entry(2); e.Term != 2 {
		t.Fatalf("entry 2 has term %d, want 2", e.Term)
	}
	if err := s.Save(raft.HardState{}, nil, []raft.Entry{ent(5, 2, "gap")}, true); err == nil {
		t.Fatal("a gap was accepted")
	}
	must(t, s.SaveSnapshot(raft.Snapshot{Meta: raft.SnapshotMeta{Index: 1, Term: 1}, Data: []byte("img")}))
	ps := s.Load()
	if ps.Snapshot == nil || ps.Snapshot.Meta.Index != 1 || len(ps.Entries) != 1 || ps.Entries[0].Index != 2 {
		t.Fatalf("after compaction: %+v", ps)
	}
	// A snapshot matching a durable entry keeps the entries after it (Figure 13, step 6).
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(3, 2, "y"), ent(4, 2, "z")}, true))
	must(t, s.Save(raft.HardState{}, &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 3, Term: 2}}, nil, true))
	if s.LastIndex() != 4 || s.SnapshotMeta().Index != 3 {
		t.Fatalf("after a matching snapshot: last %d snapshot %d, want 4 and 3", s.LastIndex(), s.SnapshotMeta().Index)
	}
	// A snapshot beyond the log replaces the whole log.
	must(t, s.Save(raft.HardState{Term: 3, Commit: 9}, &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 9, Term: 3}}, nil, true))
	if s.LastIndex() != 9 || s.SnapshotMeta().Index != 9 {
		t.Fatalf("after installing a snapshot: last %d snapshot %d", s.LastIndex(), s.SnapshotMeta().Index)
	}
	if _, ok := s.Entry(2); ok {
		t.Fatal("entry 2 survived a snapshot at 9")
	}
}

// TestMemStoreUnsynced: unsynced writes are invisible to the accessors until a sync, a synced
// Save or a local snapshot makes them (and everything before them) durable; a crash keeps a
// prefix of them, of a length the store's seed decides, and never anything out of order.
func TestMemStoreUnsynced(t *testing.T) {
	kept := map[uint64]int{} // last index after the crash -> seeds
	for seed := uint64(1); seed <= 64; seed++ {
		s := newMemStore(seed)
		must(t, s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 1}, nil, []raft.Entry{ent(1, 2, "a")}, true))
		must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(2, 2, "b"), ent(3, 2, "c")}, false))
		must(t, s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 3}, nil, []raft.Entry{ent(4, 2, "d")}, false))
		must(t, s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 4}, nil, nil, false)) // queued behind them
		if s.LastIndex() != 1 || s.HardState().Commit != 1 {
			t.Fatalf("seed %d: unsynced writes visible: last %d, %+v", seed, s.LastIndex(), s.HardState())
		}
		if ps := s.Load(); len(ps.Entries) != 1 {
			t.Fatalf("seed %d: Load returns %d entries, only 1 is durable", seed, len(ps.Entries))
		}
		must(t, s.Crash())
		last, hs := s.LastIndex(), s.HardState()
		if last < 1 || hs.Term != 2 || hs.Vote != 1 || hs.Commit > last {
			t.Fatalf("seed %d: after the crash: last %d, %+v", seed, last, hs)
		}
		for i := uint64(1); i <= last; i++ {
			if e, ok := s.Entry(i); !ok || e.Term != 2 || string(e.Data) != string(rune('a'+i-1)) {
				t.Fatalf("seed %d: entry %d after the crash: %+v %t", seed, i, e, ok)
			}
		}
		kept[last]++
		// Nothing unsynced is left: a sync now changes nothing.
		must(t, s.Sync())
		if s.LastIndex() != last {
			t.Fatalf("seed %d: a sync after the crash brought back entries: %d, was %d", seed, s.LastIndex(), last)
		}
	}
	if kept[1] == 0 || kept[4] == 0 || len(kept) < 3 {
		t.Fatalf("crashes kept too uniform a part of the unsynced writes (last index -> seeds): %v", kept)
	}

	s := newMemStore(1)
	must(t, s.Save(raft.HardState{Term: 2, Vote: 1}, nil, []raft.Entry{ent(1, 2, "a")}, true))
	// A lone commit index with nothing unsynced before it is durable at once.
	must(t, s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 1}, nil, nil, false))
	if s.HardState().Commit != 1 {
		t.Fatalf("lone unsynced commit not durable: %+v", s.HardState())
	}
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(2, 2, "b")}, false))
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(3, 2, "c")}, false)) // checked against the written log
	must(t, s.Sync())
	if s.LastIndex() != 3 {
		t.Fatalf("Sync left the durable log at %d, want 3", s.LastIndex())
	}
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(4, 2, "d")}, false))
	must(t, s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 3}, nil, nil, true)) // a synced Save covers it
	if s.LastIndex() != 4 || s.HardState().Commit != 3 {
		t.Fatalf("synced Save: last %d %+v, want 4 and commit 3", s.LastIndex(), s.HardState())
	}
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(5, 2, "e")}, false))
	must(t, s.SaveSnapshot(raft.Snapshot{Meta: raft.SnapshotMeta{Index: 5, Term: 2}, Data: []byte("img")})) // covers it too
	if s.LastIndex() != 5 || s.SnapshotMeta().Index != 5 {
		t.Fatalf("local snapshot over an unsynced entry: last %d snapshot %d", s.LastIndex(), s.SnapshotMeta().Index)
	}
	// What the contract never leaves unsynced is refused.
	if err := s.Save(raft.HardState{Term: 3}, nil, nil, false); err == nil {
		t.Fatal("an unsynced new term was accepted")
	}
	if err := s.Save(raft.HardState{}, &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 9, Term: 2}}, nil, false); err == nil {
		t.Fatal("an unsynced snapshot was accepted")
	}
	if err := s.Save(raft.HardState{}, nil, []raft.Entry{ent(8, 2, "gap")}, false); err == nil {
		t.Fatal("an unsynced gap was accepted")
	}
}

// TestAckWithUnsyncedWrites shows the acknowledgement checker fails a node that acknowledges
// entries or grants a vote while it holds unsynced appends, and ignores the stale-term notice
// (an MsgAppResp of index 0), which acknowledges nothing.
func TestAckWithUnsyncedWrites(t *testing.T) {
	send := func(m raft.Message) (v *Violation) {
		s := newSim(Options{Seed: 1, Nodes: 3}.withDefaults())
		n := s.nodes[1]
		// A durable vote for 2 in term 2, so that only the unsynced write is wrong.
		must(t, n.store.Save(raft.HardState{Term: 2, Vote: 2}, nil, []raft.Entry{ent(1, 2, "a")}, true))
		must(t, n.store.Save(raft.HardState{}, nil, []raft.Entry{ent(2, 2, "b")}, false))
		n.wroteUnsynced([]raft.Entry{ent(2, 2, "b")})
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stop); !ok {
					panic(r)
				}
				v = s.viol
			}
		}()
		s.send(n, m)
		return nil
	}
	for _, m := range []raft.Message{
		{Type: raft.MsgAppResp, From: 1, To: 2, Term: 3, Index: 1},
		{Type: raft.MsgVoteResp, From: 1, To: 2, Term: 2},
	} {
		if v := send(m); v == nil || v.Kind != AckDurability || !strings.Contains(v.Detail, "not synced") {
			t.Errorf("%s with unsynced writes: %v", m.Type, v)
		}
	}
	for _, m := range []raft.Message{
		{Type: raft.MsgAppResp, From: 1, To: 2, Term: 3},                         // the stale-term notice
		{Type: raft.MsgAppResp, From: 1, To: 2, Term: 3, Index: 2, Reject: true}, // a rejection
		{Type: raft.MsgVoteResp, From: 1, To: 2, Term: 3, Reject: true},
	} {
		if v := send(m); v != nil {
			t.Errorf("%+v flagged: %v", m, v)
		}
	}
}

func TestKVImageRoundTrip(t *testing.T) {
	s := newKV()
	for i, kv := range [][2]string{{"b", "1"}, {"a", "2"}, {"b", "3"}} {
		s.apply(raft.Entry{Index: uint64(i + 1), Term: 1, Data: encodeWrite(kv[0], kv[1])})
	}
	s.apply(raft.Entry{Index: 4, Term: 2}) // a no-op still moves the digest
	got, err := decodeKV(s.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.applied != 4 || got.appliedTerm != 2 || got.digest != s.digest || got.vals["b"] != "3" || got.idx["b"] != 3 || got.vals["a"] != "2" {
		t.Fatalf("round trip: %+v vs %+v", got, s)
	}
	if _, err := decodeKV(s.encode()[:5]); err == nil {
		t.Fatal("truncated image decoded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func errIf(msg string) error {
	if msg == "" {
		return nil
	}
	return &Violation{Detail: msg}
}

func TestCheckerApplyOrder(t *testing.T) {
	for _, c := range []struct {
		last, next uint64
		bad        bool
	}{
		{0, 1, false}, {7, 8, false},
		{8, 8, true}, {8, 3, true}, // applied again
		{8, 10, true}, // skipped
	} {
		if got := applyNext(2, c.last, c.next); (got != "") != c.bad {
			t.Errorf("applyNext(last %d, next %d) = %q, want a violation: %v", c.last, c.next, got, c.bad)
		}
	}
}
