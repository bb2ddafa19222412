package avail

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/caucus/caucus/internal/hlc"
)

// t0 is the physical time the test members start at.
const t0 = int64(1_700_000_000_000_000_000)

// member is a store with its member id, clock and a physical time that advances by 1 µs per
// operation, so tests are deterministic.
type member struct {
	t     testing.TB
	s     *Store
	dir   string
	id    uint64
	clock *hlc.Clock
	pt    atomic.Int64
}

func newMember(t testing.TB, id uint64, opts Options) *member {
	t.Helper()
	m := &member{t: t, dir: t.TempDir(), id: id, clock: hlc.NewClock(0)}
	m.pt.Store(t0)
	m.open(opts)
	t.Cleanup(func() { m.s.Close() })
	return m
}

func (m *member) open(opts Options) {
	m.t.Helper()
	s, err := Open(filepath.Join(m.dir, "avail.db"), opts)
	if err != nil {
		m.t.Fatal(err)
	}
	m.s = s
}

func (m *member) o() Origin {
	return Origin{Member: m.id, Clock: m.clock, Physical: m.pt.Add(1000)}
}

func (m *member) replica() *LocalReplica {
	return &LocalReplica{Store: m.s, Member: m.id, Clock: m.clock, Now: func() int64 { return m.pt.Add(1000) }}
}

func (m *member) mustCreate(name string, kind Kind) {
	m.t.Helper()
	if err := m.s.CreateKeyspace(context.Background(), name, kind); err != nil {
		m.t.Fatal(err)
	}
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
