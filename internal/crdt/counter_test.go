package crdt

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func counterLeq(a, b *Counter) bool {
	for _, e := range a.entries {
		i, ok := b.find(e.member)
		if !ok || b.entries[i].inc < e.inc || b.entries[i].dec < e.dec {
			return false
		}
	}
	return true
}

var counterLattice = lattice[*Counter]{
	clone:  (*Counter).Clone,
	merge:  func(dst, src *Counter) { dst.Merge(src) },
	encode: (*Counter).Marshal,
	decode: func(b []byte) (*Counter, error) { v := new(Counter); return v, v.Unmarshal(b) },
	leq:    counterLeq,
}

// brokenCounterMerge is a planted bug: the per-member minimum instead of the maximum. It is still
// commutative, associative and idempotent (a meet), so only the inflation law and the value
// check can catch it; TestCheckersCatchBrokenCounterMerge asserts that they do.
func brokenCounterMerge(dst, src *Counter) {
	for _, oe := range src.entries {
		i, ok := dst.find(oe.member)
		if !ok {
			dst.entries = append(dst.entries[:i], append([]counterEntry{oe}, dst.entries[i:]...)...)
			continue
		}
		dst.entries[i].inc = min(dst.entries[i].inc, oe.inc)
		dst.entries[i].dec = min(dst.entries[i].dec, oe.dec)
	}
}

// counterSim increments and decrements at random replicas (member id = replica + 1), summing
// what was done into *total.
func counterSim(l lattice[*Counter], total *int64, problems *[]error) replicaSim[*Counter] {
	return replicaSim[*Counter]{
		lattice: l,
		empty:   func() *Counter { return &Counter{} },
		op: func(r *rand.Rand, i int, s *Counter) *Counter {
			n := uint64(1 + r.IntN(100))
			var d *Counter
			var err error
			if r.IntN(3) == 0 {
				d, err = s.Decr(uint64(i+1), n)
				*total -= int64(n)
			} else {
				d, err = s.Incr(uint64(i+1), n)
				*total += int64(n)
			}
			if err != nil {
				*problems = append(*problems, err)
				return &Counter{}
			}
			if len(d.entries) != 1 || d.entries[0].member != uint64(i+1) {
				*problems = append(*problems, errors.New("delta is not only the acting member's entry"))
			}
			return d
		},
	}
}

// counterRun runs one convergence simulation with the given lattice and checks the laws on what
// it saw and that the converged value is the sum of all increments minus all decrements.
func counterRun(l lattice[*Counter], seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 2))
	var total int64
	var problems []error
	n := 2 + r.IntN(5)
	final, seen, err := counterSim(l, &total, &problems).run(r, n, 600)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return problems[0]
	}
	if v, err := final[0].Value(); err != nil || v != total {
		return errors.Join(err, errorf("converged value %d, want the sum of operations %d", v, total))
	}
	return checkLaws(l, r, seen, 300)
}

func TestCounterConvergence(t *testing.T) {
	for range 20 {
		seed := rand.Uint64()
		if err := counterRun(counterLattice, seed); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// TestCheckersCatchBrokenCounterMerge plants min instead of max: each checker on its own must
// report it, for every seed tried.
func TestCheckersCatchBrokenCounterMerge(t *testing.T) {
	broken := counterLattice
	broken.merge = brokenCounterMerge
	for range 5 {
		seed := rand.Uint64()
		if err := counterRun(broken, seed); err == nil {
			t.Fatalf("seed %d: the convergence checker accepted a min merge", seed)
		}
		// The laws alone, on states from a correct run, also catch it (inflation).
		r := rand.New(rand.NewPCG(seed, 3))
		var total int64
		var problems []error
		_, seen, err := counterSim(counterLattice, &total, &problems).run(r, 3, 300)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		err = checkLaws(broken, r, seen, 300)
		if err == nil || !strings.Contains(err.Error(), "inflationary") {
			t.Fatalf("seed %d: the law checker did not report the min merge as not inflationary: %v", seed, err)
		}
	}
}

func TestCounterValueAndOverflow(t *testing.T) {
	var c Counter
	if _, err := c.Incr(1, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Incr(1, 1); !errors.Is(err, ErrOverflow) {
		t.Fatalf("member's increments past 2^64-1: %v", err)
	}
	if v, err := c.Value(); !errors.Is(err, ErrOverflow) || v != math.MaxInt64 {
		t.Fatalf("Value of 2^64-1 = %d, %v; want saturated MaxInt64 and ErrOverflow", v, err)
	}
	c.Decr(2, math.MaxUint64-math.MaxInt64) // exactly MaxInt64 left
	if v, err := c.Value(); err != nil || v != math.MaxInt64 {
		t.Fatalf("Value = %d, %v; want MaxInt64", v, err)
	}
	c.Decr(3, math.MaxUint64) // (2^63-1) - (2^64-1) = -2^63
	if v, err := c.Value(); err != nil || v != math.MinInt64 {
		t.Fatalf("Value = %d, %v; want MinInt64 exactly", v, err)
	}
	c.Decr(5, 1)
	if v, err := c.Value(); !errors.Is(err, ErrOverflow) || v != math.MinInt64 {
		t.Fatalf("Value below MinInt64 = %d, %v; want saturated and ErrOverflow", v, err)
	}
	// Sums beyond 64 bits are exact: 3 × (2^64-1) increments against 3 × (2^64-1) - 5 decrements.
	var big Counter
	for m := uint64(1); m <= 3; m++ {
		big.Incr(m, math.MaxUint64)
		big.Decr(m+10, math.MaxUint64)
	}
	big.Incr(20, 5)
	if v, err := big.Value(); err != nil || v != 5 {
		t.Fatalf("Value with 128-bit sums = %d, %v; want 5", v, err)
	}
	if d, err := big.Incr(21, 0); err != nil || d.Members() != 0 || big.Members() != 7 {
		t.Fatalf("Incr by 0 of a new member: delta %v, %v, members %d", d, err, big.Members())
	}
}

func TestCounterMemberLimit(t *testing.T) {
	var c Counter
	for m := range uint64(MaxCounterMembers) {
		c.entries = append(c.entries, counterEntry{member: m, inc: 1})
	}
	if _, err := c.Incr(MaxCounterMembers, 1); !errors.Is(err, ErrLimit) {
		t.Fatalf("new member past the limit: %v", err)
	}
	if _, err := c.Incr(5, 1); err != nil {
		t.Fatalf("existing member at the limit: %v", err)
	}
	enc := c.Marshal()
	var back Counter
	if err := back.Unmarshal(enc); err != nil || !bytes.Equal(back.Marshal(), enc) {
		t.Fatalf("round trip at the limit: %v", err)
	}
	c.entries = append(c.entries, counterEntry{member: MaxCounterMembers, inc: 1})
	if err := back.Unmarshal(c.Marshal()); !errors.Is(err, ErrDecode) {
		t.Fatalf("decoding past the limit: %v", err)
	}
}

func TestCounterDecodeRejects(t *testing.T) {
	enc := func(entries ...counterEntry) []byte { return (&Counter{entries: entries}).Marshal() }
	good := enc(counterEntry{1, 2, 3}, counterEntry{9, 0, 1})
	var c Counter
	if err := c.Unmarshal(good); err != nil || c.Members() != 2 {
		t.Fatalf("good: %v", err)
	}
	for name, b := range map[string][]byte{
		"unsorted":    enc(counterEntry{9, 1, 0}, counterEntry{1, 1, 0}),
		"duplicate":   enc(counterEntry{1, 1, 0}, counterEntry{1, 2, 0}),
		"empty entry": enc(counterEntry{1, 0, 0}),
		"huge count":  {kindCounter, Version, 0xff, 0xff, 0x03},
		"trailing":    append(bytes.Clone(good), 1),
	} {
		if err := c.Unmarshal(b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
	for n := range len(good) {
		if err := c.Unmarshal(good[:n]); !errors.Is(err, ErrDecode) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	if c.Members() != 2 {
		t.Fatal("failed Unmarshal changed the counter")
	}
}
