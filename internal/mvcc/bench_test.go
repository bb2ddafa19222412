package mvcc

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

// BenchmarkApplyPut applies puts in batches of 1 and 64 (one bbolt transaction each), as the
// node does with the committed entries of one Ready, over 10,000 distinct keys with 128-byte
// values; the event cases carry one 64-byte event each (the outbox's share of a put).
func BenchmarkApplyPut(b *testing.B) {
	for _, c := range []struct {
		sync  bool
		batch int
		event bool
	}{{false, 1, false}, {false, 64, false}, {true, 1, false}, {true, 64, false}, {false, 1, true}, {false, 64, true}} {
		sync, batch, event := c.sync, c.batch, c.event
		name := fmt.Sprintf("sync=%v/batch=%d", sync, batch)
		if event {
			name += "/event"
		}
		b.Run(name, func(b *testing.B) {
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
			payload := make([]byte, 64)
			cmds := make([]*logpb.Command, batch)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			defer func() { reportCPU(b, cpu) }()
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				for j := range n {
					put := &logpb.PutRequest{Key: fmt.Appendf(nil, "key/%05d", (i+j)%10000), Value: val}
					if event {
						put.Events = []*logpb.Event{{Topic: "orders", Key: put.Key, Payload: payload}}
					}
					cmds[j] = cmdOf(put)
					cmds[j].TimeUnixNano = baseTime.UnixNano()
				}
				applyAll(b, h, cmds[:n])
			}
		})
	}
}

// BenchmarkRange reads 100-key pages from 10,000 keys with 5 versions each, at the latest
// revision and at a past one.
func BenchmarkRange(b *testing.B) {
	h := newHarness(b, Options{})
	putVersions(h, 5)
	past := h.s.Rev() - 15000
	for _, c := range []struct {
		name string
		rev  int64
	}{{"latest", 0}, {"past", past}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := processCPU()
			defer func() { reportCPU(b, cpu) }()
			for i := 0; b.Loop(); i++ {
				start := fmt.Sprintf("key/%05d", (i*100)%9900)
				r, err := h.s.Range(&logpb.RangeRequest{Key: []byte(start), RangeEnd: []byte("key0"), Limit: 100, Revision: c.rev})
				if err != nil || len(r.Kvs) != 100 {
					b.Fatalf("range: %v, %d kvs", err, len(r.Kvs))
				}
			}
		})
	}
}

// BenchmarkGet reads single keys at the latest revision (kvbench's range workloads) from 10,000
// keys with 3 versions each.
func BenchmarkGet(b *testing.B) {
	h := newHarness(b, Options{})
	putVersions(h, 3)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	defer func() { reportCPU(b, cpu) }()
	for i := 0; b.Loop(); i++ {
		r, err := h.s.Range(&logpb.RangeRequest{Key: fmt.Appendf(nil, "key/%05d", (i*7919)%10000)})
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "value-2" {
			b.Fatalf("get: %v, %v", err, r)
		}
	}
}

// putVersions writes keys key/00000..key/09999 versions times, in batches of 100; version v of
// every key has the value value-v.
func putVersions(h *harness, versions int) {
	for v := range versions {
		for i := 0; i < 10000; i += 100 {
			var cmds []*logpb.Command
			for j := i; j < i+100; j++ {
				cmds = append(cmds, putCmd(fmt.Sprintf("key/%05d", j), fmt.Sprintf("value-%d", v)))
			}
			h.batch(cmds...)
		}
	}
}

// BenchmarkApplyPutLargeKeyspace applies puts of 256-byte values to keys drawn uniformly from
// 100,000 or 1,000,000 existing ones, 80 per transaction (about what the node's group commit
// gathers under kvbench's 64-client puts). Schemas 1 to 3 kept versions by key, so each put
// dirtied a random B+tree leaf; schema 4 appends every version to the history's last page and
// finds the previous version in the key index. heap-MB is the live heap after loading the keys
// (the key index, in schema 4).
func BenchmarkApplyPutLargeKeyspace(b *testing.B) {
	for _, keys := range []int{100000, 1000000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			h := newHarness(b, Options{})
			loadKeys(b, h, keys, 256)
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heap := float64(ms.HeapAlloc) / (1 << 20)
			val := make([]byte, 256)
			const batch = 80
			cmds := make([]*logpb.Command, batch)
			x := uint64(12345) // a fixed LCG: the same keys on every run
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			defer func() { reportCPU(b, cpu) }()
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				for j := range n {
					x = x*6364136223846793005 + 1442695040888963407
					cmds[j] = cmdOf(&logpb.PutRequest{Key: fmt.Appendf(nil, "%08d", (x>>33)%uint64(keys)), Value: val})
					cmds[j].TimeUnixNano = baseTime.UnixNano()
				}
				applyAll(b, h, cmds[:n])
			}
			b.ReportMetric(heap, "heap-MB")
		})
	}
}

// BenchmarkOpenLargeKeyspace reopens a store of 1,000,000 keys: Open rebuilds the key index
// from the history bucket.
func BenchmarkOpenLargeKeyspace(b *testing.B) {
	h := newHarness(b, Options{})
	loadKeys(b, h, 1000000, 256)
	path := h.s.path
	h.s.Close()
	b.ResetTimer()
	cpu := processCPU()
	defer func() { reportCPU(b, cpu) }()
	for range b.N {
		s, err := Open(path, Options{NoSync: true, Logger: h.s.log})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// loadKeys puts keys %08d 0..n-1 with values of valLen bytes, 1000 per transaction.
func loadKeys(b *testing.B, h *harness, n, valLen int) {
	val := make([]byte, valLen)
	for i := 0; i < n; i += 1000 {
		bt := h.s.Begin()
		for j := i; j < min(i+1000, n); j++ {
			h.index++
			c := cmdOf(&logpb.PutRequest{Key: fmt.Appendf(nil, "%08d", j), Value: val})
			c.TimeUnixNano = baseTime.UnixNano()
			if r := bt.Apply(h.index, c); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		if err := bt.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetLargeKeyspace reads single random keys at the newest revision from 100,000 or
// 1,000,000 keys.
func BenchmarkGetLargeKeyspace(b *testing.B) {
	for _, keys := range []int{100000, 1000000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			h := newHarness(b, Options{})
			loadKeys(b, h, keys, 256)
			x := uint64(12345)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			defer func() { reportCPU(b, cpu) }()
			for range b.N {
				x = x*6364136223846793005 + 1442695040888963407
				r, err := h.s.Range(&logpb.RangeRequest{Key: fmt.Appendf(nil, "%08d", (x>>33)%uint64(keys))})
				if err != nil || len(r.Kvs) != 1 {
					b.Fatalf("get: %v, %v", err, r)
				}
			}
		})
	}
}

// reportCPU reports the process's CPU time since cpu per operation (cpu-ns/op): on a shared
// machine it is steadier than the wall time of ns/op.
func reportCPU(b *testing.B, cpu int64) {
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// applyAll applies cmds in one batch (one bbolt transaction), as the node does with the
// committed entries of one Ready.
func applyAll(b *testing.B, h *harness, cmds []*logpb.Command) {
	bt := h.s.Begin()
	for _, c := range cmds {
		h.index++
		if r := bt.Apply(h.index, c); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	if err := bt.Commit(); err != nil {
		b.Fatal(err)
	}
}
