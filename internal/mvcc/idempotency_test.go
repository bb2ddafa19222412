package mvcc

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

func keyed(key string, op proto.Message) *logpb.Command {
	c := cmdOf(op)
	s := &logpb.Session{IdempotencyKey: key}
	switch o := op.(type) {
	case *logpb.PutRequest:
		o.Session = s
	case *logpb.DeleteRangeRequest:
		o.Session = s
	case *logpb.TxnRequest:
		o.Session = s
	case *logpb.PublishRequest:
		o.Session = s
	}
	return c
}

// TestIdempotencyKeyAppliesOnce: a repeat of a keyed write, however much later within the
// retention and whatever was written meanwhile, gets the first result and publishes nothing;
// the same key on another request is refused; after the retention the key is free again.
func TestIdempotencyKeyAppliesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	put := func(val string) *logpb.Command {
		return keyed("order-1", &logpb.PutRequest{Key: []byte("order/1"), Value: []byte(val), Events: []*logpb.Event{ev("orders", "1", "placed")}})
	}
	first := h.ok(put("v1")).(*logpb.PutResponse)
	h.put("other", "x")
	h.now = h.now.Add(23 * time.Hour)
	again := h.ok(put("v1")).(*logpb.PutResponse)
	if again.Header.Revision != first.Header.Revision || !slices.Equal(again.EventIds, first.EventIds) {
		t.Fatalf("repeat answered %v, first %v", again, first)
	}
	if n := len(allEvents(t, h.s, 1)); n != 1 {
		t.Fatalf("%d events after a repeat, want 1", n)
	}
	wantErr(t, h.cmd(put("v2")).Err, ErrIdempotencyKeyReused)
	// Another kind of request with the same key is another request too.
	wantErr(t, h.cmd(keyed("order-1", &logpb.DeleteRangeRequest{Key: []byte("order/1")})).Err, ErrIdempotencyKeyReused)
	if kv, _ := h.get("order/1", 0); string(kv.Value) != "v1" || kv.Version != 1 {
		t.Fatalf("order/1 = %v after repeats", kv)
	}
	h.now = h.now.Add(2 * time.Hour) // 25 h after the write: past the default retention
	h.ok(put("v2"))
	if kv, _ := h.get("order/1", 0); string(kv.Value) != "v2" {
		t.Fatalf("after the retention the key did not apply again: %v", kv)
	}
	checkInvariants(t, h.s)
}

// TestRefusedKeyedWriteKeepsItsKey: a refused write changed nothing, so its key stays free and
// the same request can succeed later.
func TestRefusedKeyedWriteKeepsItsKey(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxTopics: 1}})
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a", "", "1")}}))
	pub := func() *logpb.Command {
		return keyed("k", &logpb.PublishRequest{Events: []*logpb.Event{ev("b", "", "2")}})
	}
	wantErr(t, h.cmd(pub()).Err, ErrTooManyTopics)
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	h.put("x", "y") // a batch for the compaction step to free topic a
	first := h.ok(pub()).(*logpb.PublishResponse)
	again := h.ok(pub()).(*logpb.PublishResponse)
	if !slices.Equal(first.EventIds, again.EventIds) || len(first.EventIds) != 1 {
		t.Fatalf("ids %v then %v", first.EventIds, again.EventIds)
	}
}

// TestIdempotencyKeyLimits: the table is bounded (a new key while it is full is refused, nothing
// evicted before its retention), keys survive a reopen, and a write cannot carry both identities.
func TestIdempotencyKeyLimits(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxIdempotencyKeys: 2, IdempotencyRetention: time.Hour}})
	h.ok(keyed("a", putReq("a", "1")))
	h.ok(keyed("b", putReq("b", "1")))
	wantErr(t, h.cmd(keyed("c", putReq("c", "1"))).Err, ErrTooManyIdempotencyKeys)
	h.ok(keyed("a", putReq("a", "1"))) // a repeat needs no room
	h.now = h.now.Add(time.Hour + time.Second)
	h.ok(keyed("c", putReq("c", "1")))

	both := putReq("d", "1")
	both.Session = &logpb.Session{ClientId: 1, Sequence: 1, IdempotencyKey: "d"}
	wantErr(t, h.cmd(cmdOf(both)).Err, ErrInvalidArgument)
	long := make([]byte, MaxIdempotencyKeyBytes+1)
	for i := range long {
		long[i] = 'k'
	}
	wantErr(t, h.cmd(keyed(string(long), putReq("e", "1"))).Err, ErrInvalidArgument)

	rev := h.s.Rev()
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(h.s.path, Options{NoSync: true, Limits: Limits{MaxIdempotencyKeys: 2, IdempotencyRetention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	t.Cleanup(func() { s.Close() })
	if got := h.ok(keyed("c", putReq("c", "1"))).(*logpb.PutResponse); got.Header.Revision != rev {
		t.Fatalf("after reopen the repeat answered revision %d, want %d", got.Header.Revision, rev)
	}
}

// TestKeyedCommandsNeedVersion3: a member of an older release would not know the key and apply
// a repeat again, so a keyed write is version 3.
func TestKeyedCommandsNeedVersion3(t *testing.T) {
	if v := logpb.Needs(keyed("k", putReq("a", "1"))); v != logpb.Version3 {
		t.Fatalf("a keyed put needs version %d, want 3", v)
	}
	if v := logpb.Needs(putCmd("a", "1")); v != logpb.Version1 {
		t.Fatalf("a plain put needs version %d, want 1", v)
	}
}
