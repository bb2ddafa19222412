package avail

import (
	"errors"
	"github.com/caucus/caucus/internal/hlc"
	"testing"
)

// TestPurgeTooEarlyResurrects shows why the watermark rule matters: a tombstone purged before
// every member has it lets the deleted value come back through anti-entropy; purged once every
// member has it, the key stays deleted.
func TestPurgeTooEarlyResurrects(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindRegister)
	}
	key := []byte("k")
	put := must[Delta](t)(a.s.Put(ctx, a.o(), "ks", key, []byte("v")))
	must[bool](t)(b.s.MergeRemote(ctx, b.o(), "ks", key, put.State))
	del := must[Delta](t)(a.s.Delete(ctx, a.o(), "ks", key))
	watermark := a.clock.Now(a.pt.Add(1000)) // above the tombstone's stamp

	// Too early: b has not received the tombstone.
	if n := must[int](t)(a.s.PurgeTombstones(ctx, "ks", watermark)); n != 1 {
		t.Fatalf("purged %d tombstones, want 1", n)
	}
	if _, _, err := exchange(a, b, "ks", SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	e, err := a.s.Get("ks", key)
	if err != nil || string(e.Register.Value) != "v" {
		t.Fatalf("after an early purge and anti-entropy: %+v, %v; want the deleted value back", e.Register, err)
	}

	// By the rule: delete again, let every member receive the tombstone, then purge everywhere.
	del = must[Delta](t)(a.s.Delete(ctx, a.o(), "ks", key))
	if _, _, err := exchange(a, b, "ks", SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{a, b} {
		n := 0
		must[struct{}](t)(struct{}{}, m.s.Tombstones("ks", func(k []byte, ts hlc.Timestamp) bool {
			if ts != del.Stamp {
				t.Errorf("member %d: tombstone stamp %v, want %v", m.id, ts, del.Stamp)
			}
			n++
			return true
		}))
		if n != 1 {
			t.Fatalf("member %d holds %d tombstones before the purge, want 1", m.id, n)
		}
	}
	watermark = a.clock.Now(a.pt.Add(1000))
	for _, m := range []*member{a, b} {
		if n := must[int](t)(m.s.PurgeTombstones(ctx, "ks", watermark)); n != 1 {
			t.Fatalf("member %d purged %d tombstones, want 1", m.id, n)
		}
	}
	if _, _, err := exchange(a, b, "ks", SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{a, b} {
		if _, err := m.s.Get("ks", key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("member %d after a purge by the rule: %v, want ErrNotFound", m.id, err)
		}
		if ks, _ := m.s.keyspace("ks"); ks.tree.Keys() != 0 {
			t.Fatalf("member %d still indexes %d keys", m.id, ks.tree.Keys())
		}
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
	// A watermark at the tombstone's own stamp keeps it (strictly older ones go).
	d := must[Delta](t)(a.s.Delete(ctx, a.o(), "ks", []byte("k2")))
	if n := must[int](t)(a.s.PurgeTombstones(ctx, "ks", d.Stamp)); n != 0 {
		t.Fatalf("purged %d tombstones at their own stamp, want 0", n)
	}
}
