package mvcc

import (
	"testing"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
	"google.golang.org/protobuf/proto"
)

func sessPut(client, seq uint64, key, val string) *cmdpb.Command {
	return cmdOf(&caucusv1.PutRequest{Key: []byte(key), Value: []byte(val), PrevKv: true,
		Session: &caucusv1.Session{ClientId: client, Sequence: seq}})
}

func TestSessionRetryAppliesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("k", "old")
	first := h.ok(sessPut(7, 1, "k", "new"))
	rev := h.s.Rev()
	// The retry (same sequence, even with a different payload) returns the stored result.
	retry := h.cmd(sessPut(7, 1, "k", "other"))
	if retry.Err != nil || !proto.Equal(first, retry.Resp) {
		t.Fatalf("retry = %v / %v, want the first result %v", retry.Resp, retry.Err, first)
	}
	if h.s.Rev() != rev {
		t.Fatalf("retry applied again: revision %d -> %d", rev, h.s.Rev())
	}
	if kv, _ := h.get("k", 0); string(kv.Value) != "new" || kv.Version != 2 {
		t.Fatalf("k = %v, want new at version 2", kv)
	}
	// Retrying inside a batch, next to other commands, behaves the same.
	res := h.batch(sessPut(7, 2, "k", "v2"), sessPut(7, 2, "k", "v2"), sessPut(8, 1, "j", "x"))
	if !proto.Equal(res[0].Resp, res[1].Resp) || h.s.Rev() != rev+2 {
		t.Fatalf("batched retry: %v vs %v, rev %d want %d", res[0].Resp, res[1].Resp, h.s.Rev(), rev+2)
	}
	wantErr(t, h.cmd(sessPut(7, 1, "k", "stale")).Err, ErrStaleSequence)
	// Errors are results too: a retry of a failed write returns the same error.
	bad := cmdOf(&caucusv1.PutRequest{Key: []byte("k"), Lease: 5, Session: &caucusv1.Session{ClientId: 7, Sequence: 3}})
	e1 := h.cmd(bad).Err
	wantErr(t, e1, ErrLeaseNotFound)
	h.ok(cmdOf(&caucusv1.LeaseGrantRequest{Id: 5, Ttl: 10}))
	e2 := h.cmd(bad).Err
	wantErr(t, e2, ErrLeaseNotFound)
	if e1.Error() != e2.Error() {
		t.Fatalf("stored error %q != original %q", e2, e1)
	}
	// Client 0 disables deduplication.
	rev = h.s.Rev()
	for range 2 {
		h.ok(cmdOf(&caucusv1.PutRequest{Key: []byte("z"), Session: &caucusv1.Session{ClientId: 0, Sequence: 1}}))
	}
	if h.s.Rev() != rev+2 {
		t.Fatalf("client 0 was deduplicated")
	}
	// Txn and delete are deduplicated as well.
	txn := cmdOf(&caucusv1.TxnRequest{Success: []*caucusv1.RequestOp{opPut("t", "1")}, Session: &caucusv1.Session{ClientId: 9, Sequence: 1}})
	del := cmdOf(&caucusv1.DeleteRangeRequest{Key: []byte("t"), Session: &caucusv1.Session{ClientId: 9, Sequence: 2}})
	rev = h.s.Rev()
	h.batch(txn, txn, del, del)
	if h.s.Rev() != rev+2 {
		t.Fatalf("txn/delete retries applied: revision %d -> %d, want +2", rev, h.s.Rev())
	}
}

func TestSessionExpiryAndBound(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{SessionTTL: time.Minute, MaxSessions: 3}})
	h.ok(sessPut(1, 1, "a", "1"))
	h.now = h.now.Add(30 * time.Second)
	h.ok(sessPut(2, 1, "a", "2"))
	// At 60s session 1 has been idle for the TTL: forgotten, so its retry applies again.
	h.now = baseTime.Add(time.Minute)
	rev := h.s.Rev()
	h.ok(sessPut(1, 1, "a", "1"))
	if h.s.Rev() != rev+1 {
		t.Fatal("expired session still deduplicated")
	}
	// Session 2 (idle 30s) is remembered.
	rev = h.s.Rev()
	h.ok(sessPut(2, 1, "a", "2"))
	if h.s.Rev() != rev {
		t.Fatal("live session forgotten")
	}
	// Bound: 3 sessions; adding a 4th evicts the least recently used. Session 2 was just used
	// (retry), session 1 reapplied at 60s; touch 1 again later so 2 becomes the oldest.
	h.now = h.now.Add(time.Second)
	h.ok(sessPut(1, 2, "a", "x"))
	h.now = h.now.Add(time.Second)
	h.ok(sessPut(3, 1, "a", "3"))
	h.now = h.now.Add(time.Second)
	h.ok(sessPut(4, 1, "a", "4"))
	rev = h.s.Rev()
	for _, c := range []struct {
		client uint64
		seq    uint64
		dedup  bool
	}{{1, 2, true}, {3, 1, true}, {4, 1, true}, {2, 1, false}} {
		h.ok(sessPut(c.client, c.seq, "a", "again"))
		if applied := h.s.Rev() != rev; applied == c.dedup {
			t.Fatalf("client %d: applied=%v, want dedup=%v", c.client, applied, c.dedup)
		}
		rev = h.s.Rev()
	}
	checkInvariants(t, h.s)
}
