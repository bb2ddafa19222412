package avail

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/crdt"
)

// Run the fsync benchmarks on the disk in question; TMPDIR=/dev/shm measures the store without
// the disk:
//
//	go test -run - -bench . -benchtime 2s ./internal/avail/
//	TMPDIR=/dev/shm go test -run - -bench . ./internal/avail/

// BenchmarkPut measures fsynced register puts with 1 and 64 concurrent writers.
func BenchmarkPut(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprint("writers=", writers), func(b *testing.B) {
			m := newMember(b, 1, Options{})
			m.mustCreate("ks", KindRegister)
			var next atomic.Int64
			value := make([]byte, 100)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := m.s.Put(ctx, m.o(), "ks", fmt.Appendf(nil, "key-%08d", i%100000), value); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
			st := m.s.Stats()
			b.ReportMetric(float64(st.Writes)/float64(st.Commits), "writes/commit")
		})
	}
}

// BenchmarkDigestUpdate measures what a write adds to its keyspace's tree: the key's hash,
// the O(1) leaf update, and the root recomputed along the dirty path.
func BenchmarkDigestUpdate(b *testing.B) {
	t := NewTree()
	key := []byte("some-key-of-typical-length")
	var d crdt.Digest
	old := keyHash(key, d)
	leaf := LeafOf(key)
	t.add(leaf, old)
	b.Run("leaf", func(b *testing.B) {
		for i := range b.N {
			d[0] = byte(i)
			h := keyHash(key, d)
			t.replace(leaf, old, h)
			old = h
		}
	})
	b.Run("leaf+root", func(b *testing.B) {
		for i := range b.N {
			d[0] = byte(i)
			h := keyHash(key, d)
			t.replace(leaf, old, h)
			old = h
			t.Node(0, 0)
		}
	})
}

// BenchmarkOpenRebuild measures opening a store of 100,000 keys, which rebuilds the tree.
func BenchmarkOpenRebuild(b *testing.B) {
	m := newMember(b, 1, Options{NoSync: true})
	m.mustCreate("ks", KindRegister)
	load(b, m, "ks", 0, 100_000)
	root := must[Hash](b)(m.s.Root("ks"))
	m.s.Close()
	b.ResetTimer()
	for range b.N {
		s, err := Open(filepath.Join(m.dir, "avail.db"), Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		if r := must[Hash](b)(s.Root("ks")); r != root {
			b.Fatal("root differs after rebuild")
		}
		s.Close()
	}
	m.open(Options{NoSync: true})
}

// BenchmarkSession measures a session between equal stores of 10,000 keys (the steady state)
// and one over 1,000 diverged keys (500 on each side).
func BenchmarkSession(b *testing.B) {
	b.Run("equal-10k", func(b *testing.B) {
		x, y := newMember(b, 1, Options{NoSync: true}), newMember(b, 1, Options{NoSync: true})
		for _, m := range []*member{x, y} {
			m.mustCreate("ks", KindRegister)
			load(b, m, "ks", 0, 10_000)
		}
		if _, _, err := exchange(x, y, "ks", SessionConfig{}); err != nil { // equal from here on
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			sa, _, err := exchange(x, y, "ks", SessionConfig{})
			if err != nil || sa.MessagesSent != 1 {
				b.Fatalf("%+v %v", sa, err)
			}
		}
	})
	b.Run("diverged-1k", func(b *testing.B) {
		var bytes int
		for range b.N {
			b.StopTimer()
			x, y := newMember(b, 1, Options{NoSync: true}), newMember(b, 2, Options{NoSync: true})
			for _, m := range []*member{x, y} {
				m.mustCreate("ks", KindRegister)
			}
			load(b, x, "ks", 0, 500)
			load(b, y, "ks", 500, 1000)
			b.StartTimer()
			sa, sb, err := exchange(x, y, "ks", SessionConfig{})
			if err != nil {
				b.Fatal(err)
			}
			bytes = sa.BytesSent + sb.BytesSent
		}
		b.ReportMetric(float64(bytes), "bytes/session")
	})
}
