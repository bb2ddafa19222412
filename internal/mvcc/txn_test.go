package mvcc

import (
	"slices"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

func TestTxnCompareMatrix(t *testing.T) {
	h := newHarness(t, Options{})
	lease := h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 60, Id: 7})).(*logpb.LeaseGrantResponse).Id
	h.put("k", "m")                                                                    // 2: create 2
	h.put("k", "m")                                                                    // 3: version 2
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("l"), Value: []byte("z"), Lease: lease})) // 4
	h.put("r1", "5")                                                                   // 5
	h.put("r2", "7")                                                                   // 6
	ver := func(r logpb.Compare_Result, key string, v int64) *logpb.Compare {
		return &logpb.Compare{Result: r, Target: logpb.Compare_VERSION, Key: []byte(key), TargetUnion: &logpb.Compare_Version{Version: v}}
	}
	val := func(r logpb.Compare_Result, key, v string) *logpb.Compare {
		return &logpb.Compare{Result: r, Target: logpb.Compare_VALUE, Key: []byte(key), TargetUnion: &logpb.Compare_Value{Value: []byte(v)}}
	}
	cases := []struct {
		name string
		cmp  *logpb.Compare
		want bool
	}{
		{"version equal", ver(logpb.Compare_EQUAL, "k", 2), true},
		{"version not equal", ver(logpb.Compare_NOT_EQUAL, "k", 2), false},
		{"version greater", ver(logpb.Compare_GREATER, "k", 1), true},
		{"version less false", ver(logpb.Compare_LESS, "k", 2), false},
		{"absent key version 0", ver(logpb.Compare_EQUAL, "nope", 0), true},
		{"create equal", &logpb.Compare{Target: logpb.Compare_CREATE, Key: []byte("k"), TargetUnion: &logpb.Compare_CreateRevision{CreateRevision: 2}}, true},
		{"create less", &logpb.Compare{Result: logpb.Compare_LESS, Target: logpb.Compare_CREATE, Key: []byte("k"), TargetUnion: &logpb.Compare_CreateRevision{CreateRevision: 2}}, false},
		{"mod equal", &logpb.Compare{Target: logpb.Compare_MOD, Key: []byte("k"), TargetUnion: &logpb.Compare_ModRevision{ModRevision: 3}}, true},
		{"mod absent is 0", &logpb.Compare{Target: logpb.Compare_MOD, Key: []byte("nope"), TargetUnion: &logpb.Compare_ModRevision{ModRevision: 0}}, true},
		{"value equal", val(logpb.Compare_EQUAL, "k", "m"), true},
		{"value greater", val(logpb.Compare_GREATER, "k", "a"), true},
		{"value less", val(logpb.Compare_LESS, "k", "z"), true},
		{"value not equal false", val(logpb.Compare_NOT_EQUAL, "k", "m"), false},
		{"value of absent key fails", val(logpb.Compare_NOT_EQUAL, "nope", "x"), false},
		{"lease equal", &logpb.Compare{Target: logpb.Compare_LEASE, Key: []byte("l"), TargetUnion: &logpb.Compare_Lease{Lease: lease}}, true},
		{"lease of unleased key is 0", &logpb.Compare{Target: logpb.Compare_LEASE, Key: []byte("k"), TargetUnion: &logpb.Compare_Lease{Lease: 0}}, true},
		{"range all hold", &logpb.Compare{Result: logpb.Compare_GREATER, Target: logpb.Compare_VALUE, Key: []byte("r"), RangeEnd: []byte("s"), TargetUnion: &logpb.Compare_Value{Value: []byte("4")}}, true},
		{"range one fails", &logpb.Compare{Result: logpb.Compare_GREATER, Target: logpb.Compare_VALUE, Key: []byte("r"), RangeEnd: []byte("s"), TargetUnion: &logpb.Compare_Value{Value: []byte("6")}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.s.Rev()
			r := h.ok(cmdOf(&logpb.TxnRequest{
				Compare: []*logpb.Compare{c.cmp},
				Success: []*logpb.RequestOp{opRange("k", "", 0)},
				Failure: []*logpb.RequestOp{opRange("l", "", 0)},
			})).(*logpb.TxnResponse)
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
	r := h.ok(cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{
		opPut("a", "1"), opPut("b", "2"), opDel("gone", ""),
		opRange("a", "c", 0), opRange("a", "\x00", 3), // latest sees own writes; revision 3 does not
	}})).(*logpb.TxnResponse)
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
	for _, ops := range [][]*logpb.RequestOp{
		{opPut("a", "1"), opPut("a", "2")},
		{opPut("a", "1"), opDel("a", "")},
		{opDel("a", "b"), opPut("aa", "1")},
		{opPut("z", "1"), opDel("a", "\x00")},
	} {
		txn := &logpb.TxnRequest{Success: ops}
		wantErr(t, h.s.Limits().Validate(cmdOf(txn)), ErrDuplicateKey)
		wantErr(t, h.cmd(cmdOf(txn)).Err, ErrDuplicateKey)
		// The failure branch is checked too.
		wantErr(t, h.cmd(cmdOf(&logpb.TxnRequest{Failure: ops})).Err, ErrDuplicateKey)
	}
	// Distinct keys and a delete range not covering the put are fine.
	h.ok(cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opPut("a", "1"), opPut("b", "2"), opDel("c", "d")}}))
	if h.s.Rev() != 2 {
		t.Fatalf("rev = %d, want 2 (rejected txns must not write)", h.s.Rev())
	}
}

func TestTxnAtomicOnError(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("a", "0")
	for _, ops := range [][]*logpb.RequestOp{
		{opPut("a", "1"), {Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{Key: []byte("b"), Lease: 99}}}},
		{opPut("a", "1"), opRange("a", "", 50)},
	} {
		r := h.cmd(cmdOf(&logpb.TxnRequest{Success: ops}))
		if r.Err == nil {
			t.Fatal("txn with a failing op succeeded")
		}
		if kv, _ := h.get("a", 0); string(kv.Value) != "0" || h.s.Rev() != 2 {
			t.Fatalf("failed txn wrote: a=%v rev=%d", kv, h.s.Rev())
		}
	}
}
