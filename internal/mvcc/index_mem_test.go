package mvcc

import (
	"fmt"
	"runtime"
	"testing"
)

// indexFootprint builds a key index of n keys of 16 bytes ("key/%012d") with versions versions
// each, the way the Batch does, and returns the heap bytes it holds.
func indexFootprint(n, versions int) (bytes uint64, idx *index) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	idx = newIndex()
	rec := &record{create: 2, version: 1}
	rev := int64(1)
	for v := range versions {
		for i := range n {
			rev++
			key := fmt.Appendf(nil, "key/%012d", i)
			var ki *keyIndex
			if v > 0 {
				ki = idx.get(key)
			}
			idx.add(ki, key, revision{main: rev}, rec)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return after.HeapAlloc - before.HeapAlloc, idx
}

// The key index must stay compact: well under etcd's per key (about 170 bytes for a 16-byte key
// with one revision: its B-tree slot, keyIndex, generation and revision slice and the key;
// ours measures 99: a 64-byte keyIndex holding the newest revision, the key, the slot) and
// growing linearly with keys and with revisions per key (28 bytes per extra revision: 16, and
// the older revisions' slice and its growth).
func TestIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds large indexes")
	}
	const n = 100000
	one, idx1 := indexFootprint(n, 1)
	three, idx3 := indexFootprint(n, 3)
	perKey := float64(one) / n
	perRev := float64(three-one) / (2 * n)
	t.Logf("key index: %.1f bytes per key (16-byte keys), %.1f per extra revision", perKey, perRev)
	if perKey > 104 {
		t.Errorf("key index holds %.1f bytes per key, want at most 104", perKey)
	}
	if perRev > 32 {
		t.Errorf("key index holds %.1f bytes per extra revision, want at most 32", perRev)
	}
	// Linear in keys: twice the keys, about twice the memory.
	two, idx2 := indexFootprint(2*n, 1)
	if r := float64(two) / float64(one); r < 1.8 || r > 2.2 {
		t.Errorf("index of %d keys holds %d bytes, of %d keys %d: ratio %.2f, want about 2", n, one, 2*n, two, r)
	}
	runtime.KeepAlive(idx1)
	runtime.KeepAlive(idx2)
	runtime.KeepAlive(idx3)
}

// BenchmarkIndexMemory reports the key index's heap bytes per key (16-byte keys, one revision
// each) and per extra revision, over 1,000,000 keys.
func BenchmarkIndexMemory(b *testing.B) {
	const n = 1000000
	for range b.N {
		one, idx1 := indexFootprint(n, 1)
		runtime.KeepAlive(idx1)
		idx1 = nil
		three, idx3 := indexFootprint(n, 3)
		runtime.KeepAlive(idx3)
		b.ReportMetric(float64(one)/n, "B/key")
		b.ReportMetric(float64(three-one)/(2*n), "B/extra-rev")
	}
}
