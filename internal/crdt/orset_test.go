package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// ccSubset reports whether every dot of a's context is in b's. Test contexts are small, so
// walking each prefix dot by dot is fine.
func ccSubset(a, b *causalContext) bool {
	for m, n := range a.vv {
		for k := uint64(1); k <= n; k++ {
			if !b.contains(Dot{m, k}) {
				return false
			}
		}
	}
	for d := range a.cloud {
		if !b.contains(d) {
			return false
		}
	}
	return true
}

// setLeq is the causal order, from the definitions rather than from Merge: a ≤ b when b has
// seen every dot a has seen, and every element-dot pair of b whose dot a has seen is also in a
// (b did not invent pairs for dots a knows, it can only have removed them).
func setLeq(a, b *Set) bool {
	if !ccSubset(&a.cc, &b.cc) {
		return false
	}
	for e, ds := range b.entries {
		for _, d := range ds {
			if a.cc.contains(d) && !slices.Contains(a.entries[e], d) {
				return false
			}
		}
	}
	return true
}

var setLattice = lattice[*Set]{
	clone:  (*Set).Clone,
	merge:  func(dst, src *Set) { dst.Merge(src) },
	encode: (*Set).Marshal,
	decode: func(b []byte) (*Set, error) { v := new(Set); return v, v.Unmarshal(b) },
	leq:    setLeq,
}

// brokenSetMerge is a planted bug: it unites the dots and ignores the contexts, so a remove
// never spreads. TestCheckersCatchBrokenSetMerge asserts that the checkers see it.
func brokenSetMerge(dst, src *Set) {
	for e, ds := range src.entries {
		if dst.entries == nil {
			dst.entries = make(map[string][]Dot)
		}
		u := slices.Concat(dst.entries[e], ds)
		slices.SortFunc(u, compareDots)
		dst.entries[e] = slices.CompactFunc(u, func(a, b Dot) bool { return a == b })
	}
	dst.cc.merge(&src.cc)
}

// setRef is the reference semantics of an add-wins OR-set over a run: an add of e with dot d
// puts (e, d) in, and every operation kills the dots it observed (a remove those of its element,
// an add the element's previous dots). After a full exchange the set holds exactly the pairs
// added and never killed.
type setRef struct {
	added  map[Dot]string
	killed map[Dot]bool
}

func (r *setRef) want() map[string][]Dot {
	out := map[string][]Dot{}
	for d, e := range r.added {
		if !r.killed[d] {
			out[e] = append(out[e], d)
		}
	}
	for _, ds := range out {
		slices.SortFunc(ds, compareDots)
	}
	return out
}

func setSim(l lattice[*Set], ref *setRef, problems *[]error) replicaSim[*Set] {
	return replicaSim[*Set]{
		lattice: l,
		empty:   func() *Set { return &Set{} },
		op: func(r *rand.Rand, i int, s *Set) *Set {
			e := fmt.Sprintf("e%d", r.IntN(8))
			for _, d := range s.entries[e] {
				ref.killed[d] = true
			}
			if r.IntN(3) == 0 {
				d := s.Remove(e)
				if s.Contains(e) || len(d.entries) != 0 {
					*problems = append(*problems, fmt.Errorf("replica %d: Remove(%s) left it or shipped elements", i, e))
				}
				return d
			}
			d, err := s.Add(uint64(i+1), e)
			if err != nil {
				*problems = append(*problems, err)
				return &Set{}
			}
			if !s.Contains(e) || len(d.entries) != 1 || len(d.entries[e]) != 1 {
				*problems = append(*problems, fmt.Errorf("replica %d: Add(%s) delta %v", i, e, d.entries))
				return d
			}
			ref.added[d.entries[e][0]] = e
			return d
		},
	}
}

func setRun(l lattice[*Set], seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 4))
	ref := &setRef{added: map[Dot]string{}, killed: map[Dot]bool{}}
	var problems []error
	n := 2 + r.IntN(5)
	final, seen, err := setSim(l, ref, &problems).run(r, n, 600)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return problems[0]
	}
	if want := ref.want(); !maps.EqualFunc(final[0].entries, want, slices.Equal) {
		return errorf("converged to %v, the reference says %v", final[0].entries, want)
	}
	return checkLaws(l, r, seen, 300)
}

func TestSetConvergence(t *testing.T) {
	for range 20 {
		seed := rand.Uint64()
		if err := setRun(setLattice, seed); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func TestCheckersCatchBrokenSetMerge(t *testing.T) {
	broken := setLattice
	broken.merge = brokenSetMerge
	for range 5 {
		seed := rand.Uint64()
		if err := setRun(broken, seed); err == nil {
			t.Fatalf("seed %d: the checkers accepted a merge that ignores removes", seed)
		}
	}
}

func TestSetAddWins(t *testing.T) {
	var a, b Set
	d1, _ := a.Add(1, "x")
	b.Merge(d1)
	// Concurrently: b removes x (having seen a's first add), a adds x again.
	rm := b.Remove("x")
	d2, _ := a.Add(1, "x")
	a.Merge(rm)
	b.Merge(d2)
	if !a.Contains("x") || !b.Contains("x") {
		t.Fatalf("concurrent add lost to remove: a has x: %v, b has x: %v", a.Contains("x"), b.Contains("x"))
	}
	// An add by a member the remover never heard of survives too.
	var c Set
	d3, _ := c.Add(3, "y")
	rmY := a.Remove("y") // a never saw y: an empty delta
	b.Merge(rmY)
	b.Merge(d3)
	a.Merge(d3)
	if !b.Contains("y") || !a.Contains("y") {
		t.Fatal("remove of an unseen element deleted a later-arriving add")
	}
	if !bytes.Equal(a.Marshal(), b.Marshal()) {
		t.Fatalf("a and b differ:\n%x\n%x", a.Marshal(), b.Marshal())
	}
}

func TestSetRemoveAfterObserve(t *testing.T) {
	var a, b Set
	add, _ := a.Add(1, "x")
	b.Merge(add)
	rm := b.Remove("x")
	a.Merge(rm)
	if a.Contains("x") || b.Contains("x") {
		t.Fatal("observed add survived the remove")
	}
	// The old add arriving again (a duplicate, or through a third member) does not bring x back.
	b.Merge(add)
	var c Set
	c.Merge(add)
	a.Merge(&c)
	b.Merge(&c)
	if a.Contains("x") || b.Contains("x") {
		t.Fatal("a removed element came back from a stale add")
	}
	// Everyone who merged the remove now has the same state, and the same digest.
	c.Merge(rm)
	if a.Digest() != b.Digest() || b.Digest() != c.Digest() {
		t.Fatal("replicas that saw the same operations have different digests")
	}
}

// TestSetDeltasOutOfOrder: deltas arriving with gaps stay in the dot cloud, which compacts into
// the version vector once the gaps fill.
func TestSetDeltasOutOfOrder(t *testing.T) {
	var a, b Set
	var deltas []*Set
	for i := range 5 {
		d, err := a.Add(7, fmt.Sprintf("e%d", i))
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	b.Merge(deltas[4])
	b.Merge(deltas[2])
	if b.cc.vv[7] != 0 || len(b.cc.cloud) != 2 {
		t.Fatalf("after dots 5 and 3: vv %v cloud %v, want an empty vector and two cloud dots", b.cc.vv, b.cc.cloud)
	}
	b.Merge(deltas[0])
	b.Merge(deltas[1])
	if b.cc.vv[7] != 3 || len(b.cc.cloud) != 1 {
		t.Fatalf("after dots 1 and 2: vv %v cloud %v, want prefix 3 and dot 5 in the cloud", b.cc.vv, b.cc.cloud)
	}
	b.Merge(deltas[3])
	if b.cc.vv[7] != 5 || len(b.cc.cloud) != 0 {
		t.Fatalf("after all: vv %v cloud %v, want prefix 5 and no cloud", b.cc.vv, b.cc.cloud)
	}
	if !bytes.Equal(a.Marshal(), b.Marshal()) || !slices.Equal(b.Members(), []string{"e0", "e1", "e2", "e3", "e4"}) {
		t.Fatalf("b = %v, a = %v", b.Members(), a.Members())
	}
	if b.Merge(deltas[1]) || b.Merge(&a) {
		t.Fatal("merging what b already has reported a change")
	}
}

func TestSetLimits(t *testing.T) {
	var s Set
	if _, err := s.Add(1, strings.Repeat("x", MaxSetElementBytes+1)); !errors.Is(err, ErrLimit) {
		t.Fatalf("long element: %v", err)
	}
	if _, err := s.Add(1, strings.Repeat("x", MaxSetElementBytes)); err != nil {
		t.Fatalf("element at the limit: %v", err)
	}
	// Fill the set directly (as MaxSetElements-1 adds by member 1 would) to keep the test fast.
	for i := 1; i < MaxSetElements; i++ {
		s.entries[fmt.Sprint(i)] = []Dot{{1, uint64(i + 1)}}
	}
	s.cc.vv[1] = MaxSetElements
	if _, err := s.Add(1, "one more"); !errors.Is(err, ErrLimit) {
		t.Fatalf("element past MaxSetElements: %v", err)
	}
	if _, err := s.Add(2, "1"); err != nil {
		t.Fatalf("re-adding a present element at the limit: %v", err)
	}
	var back Set
	enc := s.Marshal()
	if err := back.Unmarshal(enc); err != nil || !bytes.Equal(back.Marshal(), enc) {
		t.Fatalf("round trip of a full set: %v", err)
	}
}

func TestSetDecodeRejects(t *testing.T) {
	// Hand-built encodings; each number here is a one-byte uvarint.
	hdr := []byte{kindSet, Version}
	enc := func(parts ...[]byte) []byte { return slices.Concat(append([][]byte{hdr}, parts...)...) }
	good := enc([]byte{1, 5, 2}, []byte{1, 5, 9}, []byte{2, 1, 'a', 1, 5, 1, 1, 'b', 1, 5, 9})
	var s Set
	if err := s.Unmarshal(good); err != nil {
		t.Fatalf("good encoding: %v", err)
	}
	if !slices.Equal(s.Members(), []string{"a", "b"}) || !bytes.Equal(s.Marshal(), good) {
		t.Fatalf("good decoded to %v / %x", s.Members(), s.Marshal())
	}
	for name, b := range map[string][]byte{
		"vv counter 0":         enc([]byte{1, 5, 0}, []byte{0}, []byte{0}),
		"vv unsorted":          enc([]byte{2, 5, 1, 3, 1}, []byte{0}, []byte{0}),
		"cloud dot covered":    enc([]byte{1, 5, 2}, []byte{1, 5, 2}, []byte{0}),
		"cloud dot contiguous": enc([]byte{1, 5, 2}, []byte{1, 5, 3}, []byte{0}),
		"cloud unsorted":       enc([]byte{0}, []byte{2, 5, 9, 5, 7}, []byte{0}),
		"dot not in context":   enc([]byte{1, 5, 2}, []byte{0}, []byte{1, 1, 'a', 1, 5, 3}),
		"dot shared":           enc([]byte{1, 5, 2}, []byte{0}, []byte{2, 1, 'a', 1, 5, 1, 1, 'b', 1, 5, 1}),
		"element without dots": enc([]byte{1, 5, 2}, []byte{0}, []byte{2, 1, 'a', 0, 1, 'b', 1, 5, 1}),
		"elements unsorted":    enc([]byte{1, 5, 2}, []byte{0}, []byte{2, 1, 'b', 1, 5, 1, 1, 'a', 1, 5, 2}),
		"dots unsorted":        enc([]byte{1, 5, 2}, []byte{0}, []byte{1, 1, 'a', 2, 5, 2, 5, 1}),
		"element too long":     enc([]byte{1, 5, 1}, []byte{0}, []byte{1, 0x81, 0x20}, bytes.Repeat([]byte{'x'}, MaxSetElementBytes+1), []byte{1, 5, 1}),
		"huge element count":   enc([]byte{0}, []byte{0}, []byte{0xff, 0xff, 0x7f}),
		"trailing":             append(bytes.Clone(good), 0),
		"counter kind":         append([]byte{kindCounter}, good[1:]...),
	} {
		if err := s.Unmarshal(b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
	for n := range len(good) {
		if err := s.Unmarshal(good[:n]); !errors.Is(err, ErrDecode) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	if !slices.Equal(s.Members(), []string{"a", "b"}) {
		t.Fatal("a failed Unmarshal changed the set")
	}
}
