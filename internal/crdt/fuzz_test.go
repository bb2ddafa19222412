package crdt

import (
	"bytes"
	"testing"

	"github.com/caucus/caucus/internal/hlc"
)

// The fuzz targets check that decoding arbitrary bytes never panics, and that whatever decodes is
// canonical: it encodes back to the same bytes, and merging it into itself or into an empty state
// gives it back. `go test` runs only the seeds; `go test -fuzz FuzzSetUnmarshal` explores.

func FuzzRegisterUnmarshal(f *testing.F) {
	var r Register
	r.Set([]byte("value"), hlc.Timestamp{Wall: 1e18, Logical: 2}, 300)
	f.Add(r.Marshal())
	f.Add((&Register{Stamp: hlc.Timestamp{Wall: 5}, Member: 1, Deleted: true}).Marshal())
	f.Add((&Register{}).Marshal())
	f.Add([]byte{kindRegister, Version, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Register
		if r.Unmarshal(b) != nil {
			return
		}
		if got := r.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs: %x, input %x", got, b)
		}
		var z Register
		z.Merge(r)
		r.Merge(r)
		if !bytes.Equal(z.Marshal(), b) || !bytes.Equal(r.Marshal(), b) {
			t.Fatal("merge into empty or into itself changed the state")
		}
	})
}

func FuzzCounterUnmarshal(f *testing.F) {
	var c Counter
	c.Incr(1, 10)
	c.Decr(2, 300)
	c.Incr(1<<40, 1<<62)
	f.Add(c.Marshal())
	f.Add((&Counter{}).Marshal())
	f.Add([]byte{kindCounter, Version, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Counter
		if c.Unmarshal(b) != nil {
			return
		}
		if got := c.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs: %x, input %x", got, b)
		}
		c.Value() // must not panic, whatever the sums
		var z Counter
		z.Merge(&c)
		if c.Merge(c.Clone()) || !bytes.Equal(z.Marshal(), b) || !bytes.Equal(c.Marshal(), b) {
			t.Fatal("merge into empty or into itself changed the state")
		}
	})
}

func FuzzSetUnmarshal(f *testing.F) {
	var a, b Set
	a.Add(1, "x")
	a.Add(1, "y")
	d, _ := a.Add(2, "z")
	b.Merge(d)
	a.Remove("x")
	f.Add(a.Marshal())
	f.Add(b.Marshal())
	f.Add(d.Marshal())
	f.Add((&Set{}).Marshal())
	f.Add([]byte{kindSet, Version, 1, 5, 2, 1, 5, 9, 2, 1, 'a', 1, 5, 1, 1, 'b', 1, 5, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		var s Set
		if s.Unmarshal(in) != nil {
			return
		}
		if got := s.Marshal(); !bytes.Equal(got, in) {
			t.Fatalf("re-encoding differs: %x, input %x", got, in)
		}
		var z Set
		z.Merge(&s)
		if s.Merge(s.Clone()) || !bytes.Equal(z.Marshal(), in) || !bytes.Equal(s.Marshal(), in) {
			t.Fatal("merge into empty or into itself changed the state")
		}
	})
}
