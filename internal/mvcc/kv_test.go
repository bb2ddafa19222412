package mvcc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

func TestRevisionsAndVersions(t *testing.T) {
	h := newHarness(t, Options{})
	if h.s.Rev() != 1 {
		t.Fatalf("empty store revision = %d, want 1", h.s.Rev())
	}
	if r := h.put("a", "1"); r.Header.Revision != 2 {
		t.Fatalf("first put revision = %d, want 2", r.Header.Revision)
	}
	h.put("a", "2")
	h.put("b", "x")
	kv, ok := h.get("a", 0)
	if !ok || string(kv.Value) != "2" || kv.CreateRevision != 2 || kv.ModRevision != 3 || kv.Version != 2 {
		t.Fatalf("a = %v, want value 2 create 2 mod 3 version 2", kv)
	}
	del := h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("a"), PrevKv: true})).(*logpb.DeleteRangeResponse)
	if del.Deleted != 1 || del.Header.Revision != 5 || len(del.PrevKvs) != 1 || string(del.PrevKvs[0].Value) != "2" {
		t.Fatalf("delete = %v", del)
	}
	// Deleting nothing changes nothing: no new revision.
	if r := h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("a")})).(*logpb.DeleteRangeResponse); r.Deleted != 0 || r.Header.Revision != 5 {
		t.Fatalf("empty delete = %v, want 0 deleted at revision 5", r)
	}
	if _, ok := h.get("a", 0); ok {
		t.Fatal("a visible after delete")
	}
	// Recreated: a new generation, version restarts at 1.
	r := h.ok(cmdOf(&logpb.PutRequest{Key: []byte("a"), Value: []byte("3"), PrevKv: true})).(*logpb.PutResponse)
	if r.PrevKv != nil {
		t.Fatalf("put after delete returned prev_kv %v", r.PrevKv)
	}
	kv, _ = h.get("a", 0)
	if kv.CreateRevision != 6 || kv.ModRevision != 6 || kv.Version != 1 {
		t.Fatalf("recreated a = %v, want create 6 mod 6 version 1", kv)
	}
	// History through tombstones.
	for _, c := range []struct {
		rev   int64
		value string // "" = absent
	}{{1, ""}, {2, "1"}, {3, "2"}, {4, "2"}, {5, ""}, {6, "3"}} {
		kv, ok := h.get("a", c.rev)
		switch {
		case c.value == "" && ok:
			t.Errorf("a at %d = %v, want absent", c.rev, kv)
		case c.value != "" && (!ok || string(kv.Value) != c.value):
			t.Errorf("a at %d = %v, want %q", c.rev, kv, c.value)
		}
	}
	pr := h.ok(cmdOf(&logpb.PutRequest{Key: []byte("b"), Value: []byte("y"), PrevKv: true})).(*logpb.PutResponse)
	if pr.PrevKv == nil || string(pr.PrevKv.Value) != "x" || pr.PrevKv.ModRevision != 4 {
		t.Fatalf("prev_kv = %v, want x at 4", pr.PrevKv)
	}
	if h.s.Rev() != 7 {
		t.Fatalf("Rev = %d, want 7", h.s.Rev())
	}
	_, err := h.s.Range(&logpb.RangeRequest{Key: []byte("a"), Revision: 8})
	wantErr(t, err, ErrFutureRev)
}

func TestRangePaging(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxRangeResults: 7}})
	var want []string
	for i := range 25 {
		k := fmt.Sprintf("k%02d", i)
		want = append(want, k)
		h.put(k, "v"+k)
	}
	h.put("other", "o")
	// Page through the prefix with limit 10.
	var got []string
	key := []byte("k")
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		r := h.rng(&logpb.RangeRequest{Key: key, RangeEnd: []byte("l"), Limit: 10})
		if r.Count != int64(25-len(got)) {
			t.Fatalf("count = %d, want %d", r.Count, 25-len(got))
		}
		// The server maximum (7) caps the limit of 10.
		if len(r.Kvs) > 7 {
			t.Fatalf("page of %d keys exceeds MaxRangeResults 7", len(r.Kvs))
		}
		got = append(got, keysOf(r.Kvs)...)
		if !r.More {
			break
		}
		key = append(slices.Clone(r.Kvs[len(r.Kvs)-1].Key), 0)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged keys = %v, want %v", got, want)
	}
	r := h.rng(&logpb.RangeRequest{Key: []byte("k20"), RangeEnd: []byte{0}, Limit: 100})
	if !slices.Equal(keysOf(r.Kvs), []string{"k20", "k21", "k22", "k23", "k24", "other"}) || r.More {
		t.Fatalf("from-key range = %v more=%v", keysOf(r.Kvs), r.More)
	}
	r = h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true})
	if r.Count != 25 || len(r.Kvs) != 0 || r.More {
		t.Fatalf("count_only = %v", r)
	}
	r = h.rng(&logpb.RangeRequest{Key: []byte("k03"), RangeEnd: []byte("k05"), KeysOnly: true})
	if !slices.Equal(keysOf(r.Kvs), []string{"k03", "k04"}) || r.Kvs[0].Value != nil || r.Kvs[0].Version != 1 {
		t.Fatalf("keys_only = %v", r.Kvs)
	}
	// range_end <= key selects nothing.
	if r := h.rng(&logpb.RangeRequest{Key: []byte("k05"), RangeEnd: []byte("k03")}); r.Count != 0 {
		t.Fatalf("inverted range count = %d", r.Count)
	}
	_, err := h.s.Range(&logpb.RangeRequest{})
	wantErr(t, err, ErrEmptyKey)
}

// Keys containing 0x00 and 0xFF bytes must order bytewise in the key index.
func TestBinaryKeysOrder(t *testing.T) {
	h := newHarness(t, Options{})
	keys := []string{"a\x00", "b", "a", "a\x00\x00", "a\x00b", "a\x01", "\xff", "a\xff", "\x00", "\x00\x01"}
	for i, k := range keys {
		h.put(k, fmt.Sprint(i))
		h.put(k, fmt.Sprint(i)) // two versions, so scans must skip history
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	for _, rev := range []int64{0, h.s.Rev() - 1} {
		r := h.rng(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if !slices.Equal(keysOf(r.Kvs), want) {
			t.Fatalf("rev %d keys = %q, want %q", rev, keysOf(r.Kvs), want)
		}
	}
	r := h.rng(&logpb.RangeRequest{Key: []byte("a\x00"), RangeEnd: []byte("a\x01")})
	if !slices.Equal(keysOf(r.Kvs), []string{"a\x00", "a\x00\x00", "a\x00b"}) {
		t.Fatalf("prefix a\\x00 = %q", keysOf(r.Kvs))
	}
	if kv, ok := h.get("a", 0); !ok || string(kv.Value) != "2" || kv.Version != 2 {
		t.Fatalf("a = %v", kv)
	}
}

func TestPastRevisionRange(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("a", "a1")                                         // 2
	h.put("b", "b1")                                         // 3
	h.put("a", "a2")                                         // 4
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("b")})) // 5
	h.put("c", "c1")                                         // 6
	all := func(rev int64) []string {
		r := h.rng(&logpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, Revision: rev})
		var out []string
		for _, kv := range r.Kvs {
			out = append(out, string(kv.Key)+"="+string(kv.Value))
		}
		if int(r.Count) != len(out) {
			t.Fatalf("rev %d count %d != %d kvs", rev, r.Count, len(out))
		}
		return out
	}
	for rev, want := range map[int64][]string{
		1: nil, 2: {"a=a1"}, 3: {"a=a1", "b=b1"}, 4: {"a=a2", "b=b1"}, 5: {"a=a2"}, 6: {"a=a2", "c=c1"},
	} {
		if got := all(rev); !slices.Equal(got, want) {
			t.Errorf("rev %d = %v, want %v", rev, got, want)
		}
	}
}

func TestCompaction(t *testing.T) {
	h := newHarness(t, Options{})
	for i := range 5 {
		h.put("a", fmt.Sprint(i)) // 2..6
	}
	h.put("gone", "x")                                          // 7
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("gone")})) // 8
	h.put("a", "5")                                             // 9
	h.put("late", "l")                                          // 10
	before := h.rng(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 8})

	h.ok(cmdOf(&logpb.CompactionRequest{Revision: 8}))
	if h.s.CompactRev() != 8 || h.s.Rev() != 10 {
		t.Fatalf("compact rev %d rev %d, want 8 and 10", h.s.CompactRev(), h.s.Rev())
	}
	after := h.rng(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 8})
	if fmt.Sprint(before.Kvs) != fmt.Sprint(after.Kvs) {
		t.Fatalf("read at the compaction revision changed:\n%v\n%v", before.Kvs, after.Kvs)
	}
	_, err := h.s.Range(&logpb.RangeRequest{Key: []byte("a"), Revision: 7})
	wantErr(t, err, ErrCompacted)
	// Physically: a keeps its version at 6 (latest <= 8) and 9; gone is entirely removed.
	if got := h.versions(); !slices.Equal(got, []string{"a@9", "a@6", "late@10"}) {
		t.Fatalf("stored versions = %v", got)
	}
	wantErr(t, h.cmd(cmdOf(&logpb.CompactionRequest{Revision: 8})).Err, ErrCompacted)
	wantErr(t, h.cmd(cmdOf(&logpb.CompactionRequest{Revision: 11})).Err, ErrFutureRev)
	// A second compaction removes the version kept by the first once it is superseded.
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: 10}))
	if got := h.versions(); !slices.Equal(got, []string{"a@9", "late@10"}) {
		t.Fatalf("stored versions after second compaction = %v", got)
	}
	if kv, _ := h.get("a", 0); kv.Version != 6 || kv.CreateRevision != 2 {
		t.Fatalf("a after compaction = %v: version and create revision must survive", kv)
	}
	wantErr(t, h.cmd(cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opRange("a", "", 9)}})).Err, ErrCompacted)
	checkInvariants(t, h.s)
}

// versions lists every stored key version as key@rev, in key order and newest first, checking
// the key index agrees.
func (h *harness) versions() []string {
	type ver struct {
		key string
		rev int64
	}
	var vs []ver
	err := h.s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			rev, _, _ := splitHistKey(k)
			rec, err := decodeRecord(v)
			vs = append(vs, ver{string(rec.key), rev})
			return err
		})
	})
	if err != nil {
		h.t.Fatal(err)
	}
	checkInvariants(h.t, h.s)
	slices.SortStableFunc(vs, func(a, b ver) int {
		if a.key != b.key {
			return strings.Compare(a.key, b.key)
		}
		return cmpInt(b.rev, a.rev)
	})
	var out []string
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%s@%d", v.key, v.rev))
	}
	return out
}

// Physical compaction proceeds a bounded step per batch; every intermediate state answers reads
// like the fully compacted one, and the position survives a restart.
func TestIncrementalCompaction(t *testing.T) {
	h := newHarness(t, Options{})
	h.s.compactBudget = 3
	for i := range 30 {
		h.put(fmt.Sprintf("k%d", i%4), fmt.Sprint(i)) // revisions 2..31
	}
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k3")})) // 32
	h.put("k0", "late")                                       // 33
	want := func() string {
		r := h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 32})
		return fmt.Sprint(r.Kvs)
	}
	atCompact := want()
	latest := fmt.Sprint(h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}).Kvs)
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: 32}))
	prev := len(h.versions())
	steps := 0
	for ; len(h.versions()) > 4; steps++ {
		if steps == 5 {
			// Restart mid-compaction: the position is persisted.
			path := h.s.path
			if err := h.s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{Logger: h.s.log})
			if err != nil {
				t.Fatal(err)
			}
			s.compactBudget = 3
			h.s = s
			t.Cleanup(func() { s.Close() })
		}
		if got := want(); got != atCompact {
			t.Fatalf("step %d: read at the compacted revision changed:\n%s\n%s", steps, got, atCompact)
		}
		checkInvariants(t, h.s)
		// Each batch that applies something does one step; a no-op entry is enough.
		b := h.s.Begin()
		h.index++
		b.Noop(h.index)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		n := len(h.versions())
		if n > prev || steps > 40 {
			t.Fatalf("compaction does not progress: %d versions after %d steps", n, steps)
		}
		prev = n
	}
	if steps < 5 {
		t.Fatalf("compaction finished in %d steps; budget 3 should need more", steps)
	}
	// What remains: k0@33, k0's newest at or below 32 (i=28), k1 (i=29), k2 (i=26); k3 was
	// deleted at 32.
	if got := fmt.Sprint(h.versions()); got != "[k0@33 k0@30 k1@31 k2@28]" {
		t.Fatalf("versions = %s", got)
	}
	if got := fmt.Sprint(h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}).Kvs); got != latest {
		t.Fatalf("latest read changed by compaction:\n%s\n%s", got, latest)
	}
}

// A range longer than the index's scan chunk, with stretches of deleted keys longer than a chunk
// and keys live only at some revisions, counts, pages and reads like the model.
func TestRangeAcrossChunks(t *testing.T) {
	h := newHarness(t, Options{})
	const n = 3*scanChunk + 17
	var cmds []*logpb.Command
	for i := range n {
		cmds = append(cmds, putCmd(fmt.Sprintf("k%04d", i), fmt.Sprint(i)))
	}
	h.batch(cmds...)
	mid := h.s.Rev()
	// Delete all but every 300th key: whole chunks hold no live key.
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k0001"), RangeEnd: []byte("k0300")}))
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k0301"), RangeEnd: []byte("k0600")}))
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k0601"), RangeEnd: []byte("k9999")}))
	r := h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if got := keysOf(r.Kvs); !slices.Equal(got, []string{"k0000", "k0300", "k0600"}) || r.Count != 3 {
		t.Fatalf("range over deleted chunks = %v (count %d)", got, r.Count)
	}
	if c := h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true}); c.Count != 3 {
		t.Fatalf("count over deleted chunks = %d", c.Count)
	}
	past := h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: mid, Limit: n - 1})
	if past.Count != n || len(past.Kvs) != n-1 || !past.More || string(past.Kvs[n-2].Key) != fmt.Sprintf("k%04d", n-2) {
		t.Fatalf("range at %d: count %d, %d kvs, more %v", mid, past.Count, len(past.Kvs), past.More)
	}
	all := h.rng(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: mid})
	for i, kv := range all.Kvs {
		if string(kv.Key) != fmt.Sprintf("k%04d", i) || string(kv.Value) != fmt.Sprint(i) {
			t.Fatalf("range at %d: kv %d = %q=%q", mid, i, kv.Key, kv.Value)
		}
	}
	if len(all.Kvs) != n {
		t.Fatalf("range at %d: %d kvs, want %d", mid, len(all.Kvs), n)
	}
}
