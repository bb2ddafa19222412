package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/hlc"
)

var registerLattice = lattice[*Register]{
	clone:  func(r *Register) *Register { c := *r; return &c },
	merge:  func(dst, src *Register) { dst.Merge(*src) },
	encode: (*Register).Marshal,
	decode: func(b []byte) (*Register, error) { v := new(Register); return v, v.Unmarshal(b) },
	leq:    func(a, b *Register) bool { return compareRegisters(a, b) <= 0 },
}

// registerSim writes and deletes at n replicas whose physical clocks are offset by up to ±200 ms,
// stamping with per-replica HLCs that observe every stamp they receive. It records every write and
// reports (through *problems) a local write that did not win at its own replica: a clock that saw
// the current stamp must stamp above it.
func registerSim(n int, writes *[]Register, problems *[]error) replicaSim[*Register] {
	clocks := make([]*hlc.Clock, n)
	offsets := make([]int64, n)
	for i := range clocks {
		clocks[i] = hlc.NewClock(hlc.DefaultMaxSkew)
		offsets[i] = int64((i*97)%401-200) * int64(time.Millisecond)
	}
	real := int64(1_000_000) * int64(time.Second)
	return replicaSim[*Register]{
		lattice: registerLattice,
		empty:   func() *Register { return &Register{} },
		op: func(r *rand.Rand, i int, s *Register) *Register {
			real += r.Int64N(int64(time.Millisecond)) // often less than the offsets: concurrent writes
			ts := clocks[i].Now(real + offsets[i])
			var d Register
			var err error
			if r.IntN(4) == 0 {
				d, err = s.Delete(ts, uint64(i+1))
			} else {
				d, err = s.Set(fmt.Appendf(nil, "v%d", r.IntN(1000)), ts, uint64(i+1))
			}
			if err != nil {
				*problems = append(*problems, err)
			}
			if !bytes.Equal(s.Marshal(), d.Marshal()) {
				*problems = append(*problems, fmt.Errorf("replica %d: write at %v lost locally to %v", i, ts, s.Stamp))
			}
			*writes = append(*writes, d)
			return &d
		},
		received: func(i int, p *Register) {
			if _, err := clocks[i].Update(p.Stamp, real+offsets[i]); err != nil {
				*problems = append(*problems, err)
			}
		},
	}
}

func TestRegisterConvergence(t *testing.T) {
	for k := range 20 {
		seed := rand.Uint64()
		r := rand.New(rand.NewPCG(seed, uint64(k)))
		var writes []Register
		var problems []error
		n := 2 + r.IntN(5)
		final, seen, err := registerSim(n, &writes, &problems).run(r, n, 600)
		if err == nil && len(problems) > 0 {
			err = problems[0]
		}
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		// The winner is the greatest write, whatever the delivery order.
		want := Register{}
		for _, w := range writes {
			want.Merge(w)
		}
		if !bytes.Equal(final[0].Marshal(), want.Marshal()) {
			t.Fatalf("seed %d: converged to %+v, greatest write was %+v", seed, final[0], want)
		}
		if err := checkLaws(registerLattice, r, seen, 300); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func TestRegisterTieBreaks(t *testing.T) {
	ts := hlc.Timestamp{Wall: 5, Logical: 1}
	var a, b Register
	a.Set([]byte("from 7"), ts, 7)
	b.Set([]byte("from 3"), ts, 3)
	a2, b2 := a, b
	a2.Merge(b)
	b2.Merge(a)
	if string(a2.Value) != "from 7" || string(b2.Value) != "from 7" {
		t.Fatalf("same timestamp: got %q and %q, want the greater member id (7) to win on both", a2.Value, b2.Value)
	}
	// A delete is a write: it beats an older value and loses to a newer one.
	var r Register
	r.Set([]byte("x"), ts, 1)
	if _, err := r.Delete(hlc.Timestamp{Wall: 6}, 1); err != nil {
		t.Fatal(err)
	}
	if r.Live() || !r.Deleted || r.Value != nil {
		t.Fatalf("after a newer delete: %+v", r)
	}
	if r.Merge(Register{Value: []byte("old"), Stamp: ts, Member: 9}) {
		t.Fatal("an older write replaced the tombstone")
	}
	r.Set([]byte("y"), hlc.Timestamp{Wall: 7}, 2)
	if !r.Live() || string(r.Value) != "y" {
		t.Fatalf("write after delete: %+v", r)
	}
	var zero Register
	if zero.Live() {
		t.Fatal("zero register is live")
	}
	if _, err := zero.Set([]byte("x"), hlc.Timestamp{Wall: -1}, 1); !errors.Is(err, ErrLimit) {
		t.Fatalf("Set before the epoch: %v", err)
	}
	if _, err := zero.Delete(hlc.Timestamp{Wall: -1}, 1); !errors.Is(err, ErrLimit) {
		t.Fatalf("Delete before the epoch: %v", err)
	}
}

func TestRegisterLimitsAndDecode(t *testing.T) {
	var r Register
	if _, err := r.Set(make([]byte, MaxRegisterValueBytes+1), hlc.Timestamp{Wall: 1}, 1); !errors.Is(err, ErrLimit) {
		t.Fatalf("oversized value: %v", err)
	}
	w, err := r.Set([]byte("hello"), hlc.Timestamp{Wall: 1e18, Logical: 3}, 300)
	if err != nil {
		t.Fatal(err)
	}
	enc := w.Marshal()
	var back Register
	if err := back.Unmarshal(enc); err != nil || !bytes.Equal(back.Marshal(), enc) || back.Digest() != w.Digest() {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	tomb := Register{Stamp: hlc.Timestamp{Wall: 1}, Member: 1, Deleted: true}
	bad := append([]byte(nil), tomb.Marshal()...)
	bad = append(bad[:len(bad)-1], 1, 'x') // tombstone with a value
	for name, b := range map[string][]byte{
		"tombstone with value": bad,
		"unknown flag":         append([]byte{kindRegister, Version, 2}, enc[3:]...),
		"wrong kind":           append([]byte{kindCounter}, enc[1:]...),
		"wrong version":        append([]byte{kindRegister, 9}, enc[2:]...),
		"trailing byte":        append(bytes.Clone(enc), 0),
		"negative wall":        append(append([]byte{kindRegister, Version, 0}, hlc.Timestamp{Wall: -1}.Append(nil)...), enc[3+hlc.EncodedLen:]...),
		"overlong varint":      append(append(bytes.Clone(enc[:3+hlc.EncodedLen]), 0x80|0x2c, 0x82, 0x00), enc[3+hlc.EncodedLen+2:]...),
	} {
		if err := back.Unmarshal(b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
	for n := range len(enc) {
		if err := back.Unmarshal(enc[:n]); !errors.Is(err, ErrDecode) {
			t.Errorf("truncated to %d bytes: err = %v", n, err)
		}
	}
}
