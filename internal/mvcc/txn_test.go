package mvcc

import (
	"slices"
	"testing"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

func TestTxnCompareMatrix(t *testing.T) {
	h := newHarness(t, Options{})
	lease := h.ok(cmdOf(&caucusv1.LeaseGrantRequest{Ttl: 60, Id: 7})).(*caucusv1.LeaseGrantResponse).Id
	h.put("k", "m")                                                                       // 2: create 2
	h.put("k", "m")                                                                       // 3: version 2
	h.ok(cmdOf(&caucusv1.PutRequest{Key: []byte("l"), Value: []byte("z"), Lease: lease})) // 4
	h.put("r1", "5")                                                                      // 5
	h.put("r2", "7")                                                                      // 6
	ver := func(r caucusv1.Compare_Result, key string, v int64) *caucusv1.Compare {
		return &caucusv1.Compare{Result: r, Target: caucusv1.Compare_VERSION, Key: []byte(key), TargetUnion: &caucusv1.Compare_Version{Version: v}}
	}
	val := func(r caucusv1.Compare_Result, key, v string) *caucusv1.Compare {
		return &caucusv1.Compare{Result: r, Target: caucusv1.Compare_VALUE, Key: []byte(key), TargetUnion: &caucusv1.Compare_Value{Value: []byte(v)}}
	}
	cases := []struct {
		name string
		cmp  *caucusv1.Compare
		want bool
	}{
		{"version equal", ver(caucusv1.Compare_EQUAL, "k", 2), true},
		{"version not equal", ver(caucusv1.Compare_NOT_EQUAL, "k", 2), false},
		{"version greater", ver(caucusv1.Compare_GREATER, "k", 1), true},
		{"version less false", ver(caucusv1.Compare_LESS, "k", 2), false},
		{"absent key version 0", ver(caucusv1.Compare_EQUAL, "nope", 0), true},
		{"create equal", &caucusv1.Compare{Target: caucusv1.Compare_CREATE, Key: []byte("k"), TargetUnion: &caucusv1.Compare_CreateRevision{CreateRevision: 2}}, true},
		{"create less", &caucusv1.Compare{Result: caucusv1.Compare_LESS, Target: caucusv1.Compare_CREATE, Key: []byte("k"), TargetUnion: &caucusv1.Compare_CreateRevision{CreateRevision: 2}}, false},
		{"mod equal", &caucusv1.Compare{Target: caucusv1.Compare_MOD, Key: []byte("k"), TargetUnion: &caucusv1.Compare_ModRevision{ModRevision: 3}}, true},
		{"mod absent is 0", &caucusv1.Compare{Target: caucusv1.Compare_MOD, Key: []byte("nope"), TargetUnion: &caucusv1.Compare_ModRevision{ModRevision: 0}}, true},
		{"value equal", val(caucusv1.Compare_EQUAL, "k", "m"), true},
		{"value greater", val(caucusv1.Compare_GREATER, "k", "a"), true},
		{"value less", val(caucusv1.Compare_LESS, "k", "z"), true},
		{"value not equal false", val(caucusv1.Compare_NOT_EQUAL, "k", "m"), false},
		{"value of absent key fails", val(caucusv1.Compare_NOT_EQUAL, "nope", "x"), false},
		{"lease equal", &caucusv1.Compare{Target: caucusv1.Compare_LEASE, Key: []byte("l"), TargetUnion: &caucusv1.Compare_Lease{Lease: lease}}, true},
		{"lease of unleased key is 0", &caucusv1.Compare{Target: caucusv1.Compare_LEASE, Key: []byte("k"), TargetUnion: &caucusv1.Compare_Lease{Lease: 0}}, true},
		{"range all hold", &caucusv1.Compare{Result: caucusv1.Compare_GREATER, Target: caucusv1.Compare_VALUE, Key: []byte("r"), RangeEnd: []byte("s"), TargetUnion: &caucusv1.Compare_Value{Value: []byte("4")}}, true},
		{"range one fails", &caucusv1.Compare{Result: caucusv1.Compare_GREATER, Target: caucusv1.Compare_VALUE, Key: []byte("r"), RangeEnd: []byte("s"), TargetUnion: &caucusv1.Compare_Value{Value: []byte("6")}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.s.Rev()
			r := h.ok(cmdOf(&caucusv1.TxnRequest{
				Compare: []*caucusv1.Compare{c.cmp},
				Success: []*caucusv1.RequestOp{opRange("k", "", 0)},
				Failure: []*caucusv1.RequestOp{opRange("l", "", 0)},
			})).(*caucusv1.TxnResponse)
			if r.Succeeded != c.want {
				t.Fatalf("succeeded = %v, want %v", r.Succeeded, c.want)
			}
			wantKey := map[bool]string{true: "k", false: "l"}[c.want]
			if got := keysOf(r.Responses[0].GetResponseRange().Kvs); !slices.Equal(got, []string{wantKey}) {
				t.Fatalf("branch read %v, want %s", got, wantKey)
			}
			if h.s.Rev() != before {
				t.Fatalf("read-only txn changed the revision %d -> %d", before, h.s.Rev())
			}
		})
	}
}

func TestTxnOneRevisionReadsOwnWrites(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("x", "0")
	h.put("gone", "g")
	r := h.ok(cmdOf(&caucusv1.TxnRequest{Success: []*caucusv1.RequestOp{
		opPut("a", "1"), opPut("b", "2"), opDel("gone", ""),
		opRange("a", "c", 0), opRange("a", "\x00", 3), // latest sees own writes; revision 3 does not
	}})).(*caucusv1.TxnResponse)
	if !r.Succeeded || r.Header.Revision != 4 || h.s.Rev() != 4 {
		t.Fatalf("txn = %v, rev %d; want succeeded at revision 4", r, h.s.Rev())
	}
	if got := keysOf(r.Responses[3].GetResponseRange().Kvs); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("range after own writes = %v", got)
	}
	if got := keysOf(r.Responses[4].GetResponseRange().Kvs); !slices.Equal(got, []string{"gone", "x"}) {
		t.Fatalf("range at revision 3 inside txn = %v", got)
	}
	if r.Responses[2].GetResponseDeleteRange().Deleted != 1 {
		t.Fatalf("txn delete = %v", r.Responses[2])
	}
	for _, k := range []string{"a", "b"} {
		kv, _ := h.get(k, 0)
		if kv.ModRevision != 4 || kv.CreateRevision != 4 {
			t.Fatalf("%s = %v, want mod and create revision 4", k, kv)
		}
	}
	// Nested headers carry the txn's revision too.
	if r.Responses[0].GetResponsePut().Header.Revision != 4 {
		t.Fatalf("nested header = %v", r.Responses[0].GetResponsePut().Header)
	}
}

func TestTxnDuplicateKey(t *testing.T) {
	h := newHarness(t, Options{})
	for _, ops := range [][]*caucusv1.RequestOp{
		{opPut("a", "1"), opPut("a", "2")},
		{opPut("a", "1"), opDel("a", "")},
		{opDel("a", "b"), opPut("aa", "1")},
		{opPut("z", "1"), opDel("a", "\x00")},
	} {
		txn := &caucusv1.TxnRequest{Success: ops}
		wantErr(t, h.s.Limits().Validate(cmdOf(txn)), ErrDuplicateKey)
		wantErr(t, h.cmd(cmdOf(txn)).Err, ErrDuplicateKey)
		// The failure branch is checked too.
		wantErr(t, h.cmd(cmdOf(&caucusv1.TxnRequest{Failure: ops})).Err, ErrDuplicateKey)
	}
	// Distinct keys and a delete range not covering the put are fine.
	h.ok(cmdOf(&caucusv1.TxnRequest{Success: []*caucusv1.RequestOp{opPut("a", "1"), opPut("b", "2"), opDel("c", "d")}}))
	if h.s.Rev() != 2 {
		t.Fatalf("rev = %d, want 2 (rejected txns must not write)", h.s.Rev())
	}
}

func TestTxnAtomicOnError(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("a", "0")
	for _, ops := range [][]*caucusv1.RequestOp{
		{opPut("a", "1"), {Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: []byte("b"), Lease: 99}}}},
		{opPut("a", "1"), opRange("a", "", 50)},
	} {
		r := h.cmd(cmdOf(&caucusv1.TxnRequest{Success: ops}))
		if r.Err == nil {
			t.Fatal("txn with a failing op succeeded")
		}
		if kv, _ := h.get("a", 0); string(kv.Value) != "0" || h.s.Rev() != 2 {
			t.Fatalf("failed txn wrote: a=%v rev=%d", kv, h.s.Rev())
		}
	}
}
