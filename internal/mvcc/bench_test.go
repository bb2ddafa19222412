package mvcc

import (
	"fmt"
	"testing"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
)

// BenchmarkApplyPut applies puts in batches of 1 and 64 (one bbolt transaction each), as the
// node does with the committed entries of one Ready, over 10,000 distinct keys with 128-byte
// values.
func BenchmarkApplyPut(b *testing.B) {
	for _, c := range []struct {
		sync  bool
		batch int
	}{{false, 1}, {false, 64}, {true, 1}, {true, 64}} {
		sync, batch := c.sync, c.batch
		b.Run(fmt.Sprintf("sync=%v/batch=%d", sync, batch), func(b *testing.B) {
			h := newHarness(b, Options{})
			if sync {
				// newHarness sets NoSync; reopen durable.
				h.s.Close()
				s, err := Open(h.s.path, Options{Logger: h.s.log})
				if err != nil {
					b.Fatal(err)
				}
				h.s = s
				b.Cleanup(func() { s.Close() })
			}
			val := make([]byte, 128)
			cmds := make([]*cmdpb.Command, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				for j := range n {
					cmds[j] = cmdOf(&caucusv1.PutRequest{Key: fmt.Appendf(nil, "key/%05d", (i+j)%10000), Value: val})
					cmds[j].TimeUnixNano = baseTime.UnixNano()
				}
				bt := h.s.Begin()
				for j := range n {
					h.index++
					if r := bt.Apply(h.index, cmds[j]); r.Err != nil {
						b.Fatal(r.Err)
					}
				}
				if err := bt.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRange reads 100-key pages from 10,000 keys with 5 versions each, at the latest
// revision and at a past one.
func BenchmarkRange(b *testing.B) {
	h := newHarness(b, Options{})
	for v := range 5 {
		for i := 0; i < 10000; i += 100 {
			var cmds []*cmdpb.Command
			for j := i; j < i+100; j++ {
				cmds = append(cmds, putCmd(fmt.Sprintf("key/%05d", j), fmt.Sprintf("value-%d", v)))
			}
			h.batch(cmds...)
		}
	}
	past := h.s.Rev() - 15000
	for _, c := range []struct {
		name string
		rev  int64
	}{{"latest", 0}, {"past", past}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				start := fmt.Sprintf("key/%05d", (i*100)%9900)
				r, err := h.s.Range(&caucusv1.RangeRequest{Key: []byte(start), RangeEnd: []byte("key0"), Limit: 100, Revision: c.rev})
				if err != nil || len(r.Kvs) != 100 {
					b.Fatalf("range: %v, %d kvs", err, len(r.Kvs))
				}
			}
		})
	}
}
