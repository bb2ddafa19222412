package avail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/crdt"
	"github.com/caucus/caucus/internal/hlc"
)

var ctx = context.Background()

func TestRegisterPutGetDeleteRange(t *testing.T) {
	m := newMember(t, 1, Options{})
	m.mustCreate("kv", KindRegister)
	for _, k := range []string{"b", "a", "c"} {
		d := must[Delta](t)(m.s.Put(ctx, m.o(), "kv", []byte(k), []byte("v"+k)))
		if d.Stamp.IsZero() || len(d.State) == 0 {
			t.Fatalf("put %s: delta %+v has no stamp or state", k, d)
		}
	}
	e := must[Entry](t)(m.s.Get("kv", []byte("a")))
	if string(e.Register.Value) != "va" || e.Register.Member != 1 {
		t.Fatalf("get a = %+v", e.Register)
	}
	del := must[Delta](t)(m.s.Delete(ctx, m.o(), "kv", []byte("b")))
	if !e.Register.Stamp.Less(del.Stamp) {
		t.Fatalf("delete stamp %v not above put stamp %v", del.Stamp, e.Register.Stamp)
	}
	if _, err := m.s.Get("kv", []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted key: %v, want ErrNotFound", err)
	}
	var keys []string
	if err := m.s.Range("kv", nil, nil, func(e Entry) bool { keys = append(keys, string(e.Key)); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "a,c" {
		t.Fatalf("range = %v, want a,c", keys)
	}
	var tomb []string
	if err := m.s.Tombstones("kv", func(k []byte, ts hlc.Timestamp) bool {
		if ts != del.Stamp {
			t.Errorf("tombstone stamp %v, want %v", ts, del.Stamp)
		}
		tomb = append(tomb, string(k))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(tomb, ",") != "b" {
		t.Fatalf("tombstones = %v, want b", tomb)
	}
	// A put after the delete revives the key.
	must[Delta](t)(m.s.Put(ctx, m.o(), "kv", []byte("b"), []byte("again")))
	if e := must[Entry](t)(m.s.Get("kv", []byte("b"))); string(e.Register.Value) != "again" {
		t.Fatalf("get b after put = %q", e.Register.Value)
	}
}

func TestKindsAndLimits(t *testing.T) {
	m := newMember(t, 1, Options{NoSync: true})
	m.mustCreate("any", KindAny)
	m.mustCreate("counters", KindCounter)
	must[Delta](t)(m.s.Incr(ctx, m.o(), "any", []byte("c"), 5))
	must[Delta](t)(m.s.Decr(ctx, m.o(), "any", []byte("c"), 2))
	must[Delta](t)(m.s.Add(ctx, m.o(), "any", []byte("s"), "x"))
	must[Delta](t)(m.s.Add(ctx, m.o(), "any", []byte("s"), "y"))
	must[Delta](t)(m.s.Remove(ctx, m.o(), "any", []byte("s"), "x"))
	if v, _ := must[Entry](t)(m.s.Get("any", []byte("c"))).Counter.Value(); v != 3 {
		t.Fatalf("counter = %d, want 3", v)
	}
	if got := must[Entry](t)(m.s.Get("any", []byte("s"))).Set.Members(); len(got) != 1 || got[0] != "y" {
		t.Fatalf("set = %v, want [y]", got)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"put on a counter key", second(m.s.Put(ctx, m.o(), "any", []byte("c"), []byte("v"))), ErrKind},
		{"add on a counter key", second(m.s.Add(ctx, m.o(), "any", []byte("c"), "e")), ErrKind},
		{"put in a counter keyspace", second(m.s.Put(ctx, m.o(), "counters", []byte("k"), nil)), ErrKind},
		{"unknown keyspace", second(m.s.Incr(ctx, m.o(), "nope", []byte("k"), 1)), ErrNoKeyspace},
		{"empty key", second(m.s.Incr(ctx, m.o(), "any", nil, 1)), ErrInvalid},
		{"long key", second(m.s.Incr(ctx, m.o(), "any", make([]byte, MaxKeyBytes+1), 1)), ErrLimit},
		{"big value", second(m.s.Put(ctx, m.o(), "any", []byte("r"), make([]byte, crdt.MaxRegisterValueBytes+1))), ErrLimit},
		{"big element", second(m.s.Add(ctx, m.o(), "any", []byte("s"), strings.Repeat("e", crdt.MaxSetElementBytes+1))), crdt.ErrLimit},
		{"other kind for a keyspace", m.s.CreateKeyspace(ctx, "counters", KindSet), ErrKind},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if strings.Contains(fmt.Sprint(second(m.s.Put(ctx, m.o(), "any", []byte("c"), nil))), "holds a counter, not a register") == false {
		t.Errorf("kind mismatch error does not say what the key holds")
	}
	// A refused write left the key as it was.
	if v, _ := must[Entry](t)(m.s.Get("any", []byte("c"))).Counter.Value(); v != 3 {
		t.Fatalf("counter after refused writes = %d, want 3", v)
	}
	for i := len(m.s.Keyspaces()); i < MaxKeyspaces; i++ {
		m.mustCreate(fmt.Sprint("ks", i), KindAny)
	}
	if err := m.s.CreateKeyspace(ctx, "one-too-many", KindAny); !errors.Is(err, ErrLimit) {
		t.Fatalf("keyspace past the limit: %v, want ErrLimit", err)
	}
}

func second[T any](_ T, err error) error { return err }

// TestDeltasReplicate applies every local operation's delta at another member, which must end
// with the same values and the same Merkle root.
func TestDeltasReplicate(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindAny)
	}
	var deltas []Delta
	add := func(d Delta, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	add(a.s.Put(ctx, a.o(), "ks", []byte("r"), []byte("1")))
	add(a.s.Put(ctx, a.o(), "ks", []byte("r"), []byte("2")))
	add(a.s.Delete(ctx, a.o(), "ks", []byte("r")))
	add(a.s.Put(ctx, a.o(), "ks", []byte("r2"), []byte("x")))
	add(a.s.Incr(ctx, a.o(), "ks", []byte("c"), 7))
	add(a.s.Decr(ctx, a.o(), "ks", []byte("c"), 3))
	add(a.s.Add(ctx, a.o(), "ks", []byte("s"), "e1"))
	add(a.s.Add(ctx, a.o(), "ks", []byte("s"), "e2"))
	add(a.s.Remove(ctx, a.o(), "ks", []byte("s"), "e1"))
	// Deltas arrive out of order and twice.
	for i := len(deltas) - 1; i >= 0; i-- {
		for range 2 {
			if _, err := b.s.MergeRemote(ctx, b.o(), "ks", deltas[i].Key, deltas[i].State); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
}

func TestMergeRemoteValidates(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindAny)
	}
	// a's physical clock runs an hour ahead of b's.
	far := Origin{Member: 1, Clock: a.clock, Physical: t0 + int64(time.Hour)}
	d := must[Delta](t)(a.s.Put(ctx, far, "ks", []byte("k"), []byte("future")))
	_, err := b.s.MergeRemote(ctx, b.o(), "ks", d.Key, d.State)
	var se *hlc.SkewError
	if !errors.Is(err, hlc.ErrSkew) || !errors.As(err, &se) {
		t.Fatalf("merge of a stamp an hour ahead: %v, want a *hlc.SkewError", err)
	}
	if _, err := b.s.Get("ks", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused merge left a value: %v", err)
	}
	bad := append(bytes.Clone(d.State), 0)
	if _, err := b.s.MergeRemote(ctx, b.o(), "ks", d.Key, bad); !errors.Is(err, crdt.ErrDecode) {
		t.Fatalf("merge of a state with a trailing byte: %v, want crdt.ErrDecode", err)
	}
	c := must[Delta](t)(a.s.Incr(ctx, a.o(), "ks", []byte("c"), 1))
	must[Delta](t)(b.s.Put(ctx, b.o(), "ks", []byte("c"), []byte("register")))
	if _, err := b.s.MergeRemote(ctx, b.o(), "ks", c.Key, c.State); !errors.Is(err, ErrKind) {
		t.Fatalf("merge of a counter into a register key: %v, want ErrKind", err)
	}
	// A batch refuses items one by one.
	res := must[[]MergeResult](t)(b.s.MergeRemoteBatch(ctx, b.o(), "ks", []Remote{
		{Key: []byte("k"), State: d.State}, {Key: []byte("c2"), State: c.State}}))
	if res[0].Err == nil || res[1].Err != nil || !res[1].Changed {
		t.Fatalf("batch results %+v: want the first refused, the second merged", res)
	}
}

// TestReopen checks that the tree rebuilt at open equals the one kept up to date write by
// write, and that the clock's high-water mark survives.
func TestReopen(t *testing.T) {
	m := newMember(t, 1, Options{NoSync: true})
	m.mustCreate("ks", KindAny)
	for i := range 300 {
		k := []byte(fmt.Sprint("k", i%100))
		switch i % 3 {
		case 0:
			must[Delta](t)(m.s.Put(ctx, m.o(), "ks", k, []byte(fmt.Sprint(i))))
		case 1:
			must[Delta](t)(m.s.Delete(ctx, m.o(), "ks", k))
		}
	}
	must[int](t)(m.s.PurgeTombstones(ctx, "ks", m.clock.Last()))
	root := must[Hash](t)(m.s.Root("ks"))
	stamp := m.s.MaxStamp()
	if stamp != m.clock.Last() {
		t.Fatalf("max stamp %v, clock %v", stamp, m.clock.Last())
	}
	if err := m.s.Close(); err != nil {
		t.Fatal(err)
	}
	m.open(Options{})
	if got := must[Hash](t)(m.s.Root("ks")); got != root {
		t.Fatalf("root after reopen %x, before %x", got, root)
	}
	if m.s.MaxStamp() != stamp {
		t.Fatalf("max stamp after reopen %v, want %v", m.s.MaxStamp(), stamp)
	}
}

// TestGroupCommit shows that concurrent writers share commits: N writers doing W fsynced writes
// each cause far fewer commits than N*W.
func TestGroupCommit(t *testing.T) {
	m := newMember(t, 1, Options{})
	m.mustCreate("ks", KindCounter)
	const writers, each = 64, 20
	before := m.s.Stats()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := m.s.Incr(ctx, Origin{Member: uint64(w + 1)}, "ks", []byte(fmt.Sprint("c", i%4)), 1); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := m.s.Stats()
	commits, writes := st.Commits-before.Commits, st.Writes-before.Writes
	t.Logf("%d writers x %d writes: %d commits for %d writes", writers, each, commits, writes)
	if writes != writers*each || commits*4 > writes {
		t.Fatalf("%d commits for %d writes: want at most a quarter", commits, writes)
	}
	total := int64(0)
	for i := range 4 {
		v, _ := must[Entry](t)(m.s.Get("ks", []byte(fmt.Sprint("c", i)))).Counter.Value()
		total += v
	}
	if total != writers*each {
		t.Fatalf("counters sum to %d, want %d", total, writers*each)
	}
}

func TestContextAndClose(t *testing.T) {
	m := newMember(t, 1, Options{NoSync: true})
	m.mustCreate("ks", KindRegister)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.s.Put(cctx, m.o(), "ks", []byte("k"), []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a canceled context: %v", err)
	}
	if _, err := m.s.Get("ks", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("put with a canceled context was applied: %v", err)
	}
	m.s.Close()
	if _, err := m.s.Put(ctx, m.o(), "ks", []byte("k"), []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v, want ErrClosed", err)
	}
}
