// Package etcdmem measures the heap etcd's mvcc store (v3.7.3, storage/mvcc on its bbolt
// backend) holds per key: the yardstick for the memory of caucus's key
// index (internal/mvcc TestIndexMemory and BenchmarkIndexMemory measure caucus the same way,
// with the same 16-byte keys).
package etcdmem

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
)

// footprint puts n keys ("key/%012d", empty values) into a new etcd store, commits, and returns
// the heap bytes the store holds beyond an empty one. (Without a lessor, as here, etcd's store
// cannot overwrite a key: it asks the lessor for the key's previous lease.)
func footprint(tb testing.TB, n int) uint64 {
	be := backend.NewDefaultBackend(zap.NewNop(), filepath.Join(tb.TempDir(), "db"))
	defer be.Close()
	s := mvcc.NewStore(zap.NewNop(), be, nil, mvcc.StoreConfig{})
	defer s.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i += 1000 {
		txn := s.Write(traceutil.TODO())
		for j := i; j < i+1000 && j < n; j++ {
			txn.Put(fmt.Appendf(nil, "key/%012d", j), nil, lease.NoLease)
		}
		txn.End()
	}
	be.ForceCommit()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	return after.HeapAlloc - before.HeapAlloc
}

// BenchmarkEtcdStoreMemory reports etcd's heap bytes per key (one revision each) over 200,000
// keys (-benchtime 1x).
func BenchmarkEtcdStoreMemory(b *testing.B) {
	const n = 200000
	for range b.N {
		b.ReportMetric(float64(footprint(b, n))/n, "B/key")
	}
}

// The measurement itself: more keys hold more memory, per key in a plausible range.
func TestFootprintPlausible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an etcd store")
	}
	small, large := footprint(t, 20000), footprint(t, 40000)
	if large <= small || float64(small)/20000 < 64 {
		t.Fatalf("etcd heap for 20000 keys %d bytes, for 40000 %d", small, large)
	}
	t.Logf("etcd: %.0f bytes per key", float64(large)/40000)
}
