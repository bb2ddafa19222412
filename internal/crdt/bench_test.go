package crdt

import (
	"fmt"
	"testing"

	"github.com/caucus/caucus/internal/hlc"
)

func BenchmarkRegisterMerge(b *testing.B) {
	var x, y Register
	x.Set(make([]byte, 100), hlc.Timestamp{Wall: 1}, 1)
	y.Set(make([]byte, 100), hlc.Timestamp{Wall: 2}, 2)
	for b.Loop() {
		z := x
		z.Merge(y)
	}
}

func BenchmarkRegisterMarshal(b *testing.B) {
	var x Register
	x.Set(make([]byte, 100), hlc.Timestamp{Wall: 1}, 1)
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = x.AppendBinary(buf[:0])
	}
}

// benchCounter returns a counter with entries of members 1..n.
func benchCounter(n int) *Counter {
	var c Counter
	for m := range n {
		c.Incr(uint64(m+1), uint64(1000*(m+1)))
		c.Decr(uint64(m+1), uint64(m))
	}
	return &c
}

func BenchmarkCounterMerge(b *testing.B) {
	for _, n := range []int{5, 100} {
		state := benchCounter(n)
		delta, _ := benchCounter(n).Incr(3, 1)
		full := benchCounter(n)
		full.Incr(4, 1)
		b.Run(fmt.Sprintf("delta/members=%d", n), func(b *testing.B) {
			for b.Loop() {
				state.Merge(delta)
			}
		})
		b.Run(fmt.Sprintf("state/members=%d", n), func(b *testing.B) {
			for b.Loop() {
				state.Merge(full)
			}
		})
	}
}

func BenchmarkCounterMarshal(b *testing.B) {
	for _, n := range []int{5, 100} {
		c := benchCounter(n)
		buf := make([]byte, 0, 4096)
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			for b.Loop() {
				buf = c.AppendBinary(buf[:0])
			}
		})
	}
}

// benchSet returns a set of n 16-byte elements added round-robin by 5 members.
func benchSet(n int) *Set {
	var s Set
	for i := range n {
		s.Add(uint64(i%5+1), fmt.Sprintf("element-%08d", i))
	}
	return &s
}

func BenchmarkSetMerge(b *testing.B) {
	for _, n := range []int{10, 1000} {
		state := benchSet(n)
		other := benchSet(n)
		delta, _ := other.Add(9, "element-new")
		b.Run(fmt.Sprintf("delta/elements=%d", n), func(b *testing.B) {
			for b.Loop() {
				state.Merge(delta)
			}
		})
		b.Run(fmt.Sprintf("state/elements=%d", n), func(b *testing.B) {
			for b.Loop() {
				state.Merge(other)
			}
		})
	}
}

func BenchmarkSetMarshal(b *testing.B) {
	for _, n := range []int{10, 1000} {
		s := benchSet(n)
		buf := make([]byte, 0, 64*n)
		b.Run(fmt.Sprintf("elements=%d", n), func(b *testing.B) {
			for b.Loop() {
				buf = s.AppendBinary(buf[:0])
			}
		})
	}
}

func BenchmarkSetUnmarshal(b *testing.B) {
	enc := benchSet(1000).Marshal()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		var s Set
		if err := s.Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}
