package mvcc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

// TestRangeMatchesModel checks every read path (newest versions, past revisions with short and
// long histories, single keys, ranges, limits) against a plain map kept per revision.
func TestRangeMatchesModel(t *testing.T) {
	h := newHarness(t, Options{})
	rng := rand.New(rand.NewPCG(7, 7))
	type ver struct {
		value       string
		create, mod int64
		version     int64
	}
	models := map[int64]map[string]ver{1: {}}
	cur := map[string]ver{}
	keys := []string{"a", "a\x00", "ab", "b", "c", "c\x00\x00", "d"}
	for i := range 400 {
		k := keys[rng.IntN(len(keys))]
		// Key "d" gets few writes, "a" many: short and long histories for the index to search.
		if k == "d" && rng.IntN(4) != 0 {
			k = "a"
		}
		if rng.IntN(5) == 0 {
			r := h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte(k)})).(*logpb.DeleteRangeResponse)
			if _, ok := cur[k]; ok != (r.Deleted == 1) {
				t.Fatalf("delete %q deleted %d, model has it: %v", k, r.Deleted, ok)
			}
			delete(cur, k)
		} else {
			v := fmt.Sprint(i)
			rev := h.put(k, v).Header.Revision
			old, ok := cur[k]
			if !ok {
				old = ver{create: rev}
			}
			cur[k] = ver{value: v, create: old.create, mod: rev, version: old.version + 1}
		}
		models[h.s.Rev()] = maps.Clone(cur)
	}
	model := func(rev int64) map[string]ver {
		for ; rev > 0; rev-- {
			if m, ok := models[rev]; ok {
				return m
			}
		}
		return nil
	}
	check := func(rev int64, key, end string, limit int64) {
		t.Helper()
		r := h.rng(&logpb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end), Revision: rev, Limit: limit})
		m := model(rev)
		if rev == 0 {
			m = cur
		}
		var want []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if inRange([]byte(k), []byte(key), []byte(end)) {
				v := m[k]
				want = append(want, fmt.Sprintf("%q=%s c%d m%d v%d", k, v.value, v.create, v.mod, v.version))
			}
		}
		var got []string
		for _, kv := range r.Kvs {
			got = append(got, fmt.Sprintf("%q=%s c%d m%d v%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version))
		}
		if r.Count != int64(len(want)) {
			t.Fatalf("rev %d [%q,%q) count %d, want %d", rev, key, end, r.Count, len(want))
		}
		if limit > 0 && int64(len(want)) > limit {
			want = want[:limit]
			if !r.More {
				t.Fatalf("rev %d [%q,%q) limit %d: more not set", rev, key, end, limit)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("rev %d [%q,%q):\n got %v\nwant %v", rev, key, end, got, want)
		}
	}
	for rev := int64(0); rev <= h.s.Rev(); rev++ {
		check(rev, "\x00", "\x00", 0)
		check(rev, "a", "c", 2)
		check(rev, "a", "", 0)
		check(rev, "c\x00", "\x00", 0)
	}
}
