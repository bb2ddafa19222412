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
	a, b := newMemStore(), newMemStore()
	must(t, a.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}))
	if msg := c.persisted(1, a, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}); msg != "" {
		t.Fatal(msg)
	}
	// Same (index, term) with the same content and predecessor: fine.
	must(t, b.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}))
	if msg := c.persisted(2, b, []raft.Entry{ent(1, 1, ""), ent(2, 2, "x")}); msg != "" {
		t.Fatal(msg)
	}
	// Same (index, term), different content.
	d := newMemStore()
	must(t, d.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 1, ""), ent(2, 2, "y")}))
	if msg := c.persisted(3, d, []raft.Entry{ent(1, 1, ""), ent(2, 2, "y")}); !strings.Contains(msg, "differs") {
		t.Fatalf("differing entry not flagged: %q", msg)
	}
	// Same (index, term) and content but a different predecessor term: the prefixes differ.
	e := newMemStore()
	must(t, e.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(1, 2, ""), ent(2, 2, "x")}))
	if msg := c.persisted(4, e, []raft.Entry{ent(2, 2, "x")}); !strings.Contains(msg, "follows term") {
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

	short := newMemStore()
	must(t, short.Save(raft.HardState{Term: 2}, nil, []raft.Entry{e1}))
	if _, msg := c.leaderHolds(2, 3, short, 0); msg != "" {
		t.Fatalf("leader of term 3 need not hold an entry applied at term 3: %s", msg)
	}
	if _, msg := c.leaderHolds(2, 4, short, 0); !strings.Contains(msg, "lacks entry 2@1") {
		t.Fatalf("leader of term 4 missing a committed entry not flagged: %q", msg)
	}
	wrong := newMemStore()
	must(t, wrong.Save(raft.HardState{Term: 4}, nil, []raft.Entry{e1, ent(2, 2, "c")}))
	if _, msg := c.leaderHolds(3, 4, wrong, 0); !strings.Contains(msg, "holds 2@2") {
		t.Fatalf("leader holding a different entry not flagged: %q", msg)
	}
	full := newMemStore()
	must(t, full.Save(raft.HardState{Term: 4}, nil, []raft.Entry{e1, e2}))
	if cur, msg := c.leaderHolds(3, 4, full, 0); msg != "" || cur != len(c.events) {
		t.Fatalf("complete leader flagged (%q) or cursor %d not at %d", msg, cur, len(c.events))
	}
}

func TestMemStoreTruncation(t *testing.T) {
	s := newMemStore()
	must(t, s.Save(raft.HardState{Term: 1, Commit: 1}, nil, []raft.Entry{ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 1, "c")}))
	// A new leader overwrites from index 2.
	must(t, s.Save(raft.HardState{Term: 2}, nil, []raft.Entry{ent(2, 2, "x")}))
	if s.LastIndex() != 2 {
		t.Fatalf("last index %d after truncating append, want 2", s.LastIndex())
	}
	if e, _ := s.Entry(2); e.Term != 2 {
		t.Fatalf("entry 2 has term %d, want 2", e.Term)
	}
	if err := s.Save(raft.HardState{}, nil, []raft.Entry{ent(5, 2, "gap")}); err == nil {
		t.Fatal("a gap was accepted")
	}
	must(t, s.SaveSnapshot(raft.Snapshot{Meta: raft.SnapshotMeta{Index: 1, Term: 1}, Data: []byte("img")}))
	ps := s.Load()
	if ps.Snapshot == nil || ps.Snapshot.Meta.Index != 1 || len(ps.Entries) != 1 || ps.Entries[0].Index != 2 {
		t.Fatalf("after compaction: %+v", ps)
	}
	// A snapshot matching a durable entry keeps the entries after it (Figure 13, step 6).
	must(t, s.Save(raft.HardState{}, nil, []raft.Entry{ent(3, 2, "y"), ent(4, 2, "z")}))
	must(t, s.Save(raft.HardState{}, &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 3, Term: 2}}, nil))
	if s.LastIndex() != 4 || s.SnapshotMeta().Index != 3 {
		t.Fatalf("after a matching snapshot: last %d snapshot %d, want 4 and 3", s.LastIndex(), s.SnapshotMeta().Index)
	}
	// A snapshot beyond the log replaces the whole log.
	must(t, s.Save(raft.HardState{Term: 3, Commit: 9}, &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 9, Term: 3}}, nil))
	if s.LastIndex() != 9 || s.SnapshotMeta().Index != 9 {
		t.Fatalf("after installing a snapshot: last %d snapshot %d", s.LastIndex(), s.SnapshotMeta().Index)
	}
	if _, ok := s.Entry(2); ok {
		t.Fatal("entry 2 survived a snapshot at 9")
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
