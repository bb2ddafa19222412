package mvcc

import (
	"slices"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

func TestLeaseGrantAttachRevoke(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxLeases: 3}})
	// id 0: chosen from the applying index (1 here), the same on every member.
	g := h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10})).(*logpb.LeaseGrantResponse)
	if g.Id != 1 || g.Ttl != 10 {
		t.Fatalf("grant = %v, want id 1 (index) ttl 10", g)
	}
	// An explicit id equal to the next index forces the chooser to skip it.
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10, Id: 3}))
	if g2 := h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 5})).(*logpb.LeaseGrantResponse); g2.Id != 4 {
		t.Fatalf("chosen id = %d, want 4 (index 3 is taken)", g2.Id)
	}
	wantErr(t, h.cmd(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10, Id: 3})).Err, ErrLeaseExists)
	wantErr(t, h.cmd(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10, Id: 100})).Err, ErrTooManyLeases) // MaxLeases 3
	wantErr(t, h.cmd(cmdOf(&logpb.LeaseGrantRequest{Ttl: 0})).Err, ErrInvalidArgument)
	wantErr(t, h.cmd(cmdOf(&logpb.PutRequest{Key: []byte("k"), Lease: 42})).Err, ErrLeaseNotFound)
	if h.s.Rev() != 1 {
		t.Fatalf("lease grants changed the revision to %d", h.s.Rev())
	}

	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("a"), Value: []byte("1"), Lease: 1}))
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("b"), Value: []byte("1"), Lease: 1}))
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("c"), Value: []byte("1"), Lease: 1}))
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("c"), Value: []byte("2"), Lease: 3})) // moves c to lease 3
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("b")}))                       // detaches b
	h.put("free", "x")
	ttl, err := h.s.LeaseTimeToLive(1, true, h.now.Add(2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != 8 || ttl.GrantedTTL != 10 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "a" {
		t.Fatalf("time to live = %v, want ttl 8 (7.5 rounded up), granted 10, keys [a]", ttl)
	}
	ls, _, _ := h.s.Leases()
	if !slices.Equal(ls, []int64{1, 3, 4}) {
		t.Fatalf("leases = %v", ls)
	}

	rev := h.s.Rev()
	r := h.ok(cmdOf(&logpb.LeaseRevokeRequest{Id: 1})).(*logpb.LeaseRevokeResponse)
	if r.Header.Revision != rev+1 {
		t.Fatalf("revoke revision = %d, want %d", r.Header.Revision, rev+1)
	}
	if _, ok := h.get("a", 0); ok {
		t.Fatal("revoked lease's key a survives")
	}
	for _, k := range []string{"c", "free"} {
		if _, ok := h.get(k, 0); !ok {
			t.Fatalf("key %s not attached to the lease was deleted", k)
		}
	}
	if ttl, _ := h.s.LeaseTimeToLive(1, true, h.now); ttl.TTL != -1 {
		t.Fatalf("revoked lease ttl = %d, want -1", ttl.TTL)
	}
	wantErr(t, h.cmd(cmdOf(&logpb.LeaseRevokeRequest{Id: 1})).Err, ErrLeaseNotFound)
	wantErr(t, h.cmd(cmdOf(&logpb.LeaseKeepAliveRequest{Id: 1})).Err, ErrLeaseNotFound)
	// Revoking a lease with several keys deletes them at one revision.
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("d"), Value: []byte("1"), Lease: 3}))
	rev = h.s.Rev()
	h.ok(cmdOf(&logpb.LeaseRevokeRequest{Id: 3}))
	if h.s.Rev() != rev+1 {
		t.Fatalf("revoking two keys took revisions %d -> %d, want one", rev, h.s.Rev())
	}
	if r := h.rng(&logpb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("e"), Revision: rev}); r.Count != 2 {
		t.Fatalf("keys before revoke = %v", r.Kvs)
	}
}

func TestLeaseExpiryDeterministic(t *testing.T) {
	h := newHarness(t, Options{})
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10, Id: 1}))
	h.now = h.now.Add(2 * time.Second)
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 10, Id: 2}))
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("k1"), Value: []byte("v"), Lease: 1}))
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("k2"), Value: []byte("v"), Lease: 2}))

	if got := h.s.ExpiredLeases(baseTime.Add(9*time.Second), 10); len(got) != 0 {
		t.Fatalf("expired at 9s = %v, want none", got)
	}
	if got := h.s.ExpiredLeases(baseTime.Add(12*time.Second), 10); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("expired at 12s = %v, want [1 2] by deadline", got)
	}
	if got := h.s.ExpiredLeases(baseTime.Add(12*time.Second), 1); !slices.Equal(got, []int64{1}) {
		t.Fatalf("expired with max 1 = %v", got)
	}
	// The leader decided at 12s, but a keep-alive of lease 2 (at 11s) was ordered first: it wins.
	h.now = baseTime.Add(11 * time.Second)
	ka := h.ok(cmdOf(&logpb.LeaseKeepAliveRequest{Id: 2})).(*logpb.LeaseKeepAliveResponse)
	if ka.Ttl != 10 {
		t.Fatalf("keep-alive = %v", ka)
	}
	expire := cmdOf(&logpb.LeaseExpire{Ids: []int64{1, 2}})
	expire.TimeUnixNano = baseTime.Add(12 * time.Second).UnixNano()
	rev := h.s.Rev()
	h.ok(expire)
	if _, ok := h.get("k1", 0); ok {
		t.Fatal("expired lease 1 kept its key")
	}
	if _, ok := h.get("k2", 0); !ok {
		t.Fatal("renewed lease 2 lost its key")
	}
	if h.s.Rev() != rev+1 {
		t.Fatalf("expiry revision %d, want %d", h.s.Rev(), rev+1)
	}
	if ls, _, _ := h.s.Leases(); !slices.Equal(ls, []int64{2}) {
		t.Fatalf("leases after expiry = %v", ls)
	}
	// A LeaseExpire whose time is before the deadline does nothing, whatever the ids.
	early := cmdOf(&logpb.LeaseExpire{Ids: []int64{2, 99}})
	early.TimeUnixNano = baseTime.Add(20 * time.Second).UnixNano()
	h.ok(early)
	if ls, _, _ := h.s.Leases(); !slices.Equal(ls, []int64{2}) {
		t.Fatalf("lease 2 expired before its deadline (21s): %v", ls)
	}
	if got := h.s.ExpiredLeases(baseTime.Add(21*time.Second), 10); !slices.Equal(got, []int64{2}) {
		t.Fatalf("expired at 21s = %v", got)
	}
	checkInvariants(t, h.s)
}
