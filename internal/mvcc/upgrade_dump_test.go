package mvcc

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

// dumpStore renders everything a client can read from s: every key at every revision from the
// compacted one up, the change feed with previous versions, and the leases with their keys.
func dumpStore(t testing.TB, s *Store) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d compacted %d applied %d\n", s.Rev(), s.CompactRev(), s.AppliedIndex())
	for rev := s.CompactRev(); rev <= s.Rev(); rev++ {
		r, err := s.Range(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		fmt.Fprintf(&b, "@%d count %d:", rev, r.Count)
		for _, kv := range r.Kvs {
			fmt.Fprintf(&b, " %q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
		}
		b.WriteString("\n")
	}
	evs, _, err := s.Changes(s.CompactRev()+1, 1<<20, true)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	for _, ev := range evs {
		fmt.Fprintf(&b, "event %d %q m%d c%d v%d %q", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.CreateRevision, ev.Kv.Version, ev.Kv.Value)
		if ev.PrevKv != nil {
			fmt.Fprintf(&b, " prev m%d %q", ev.PrevKv.ModRevision, ev.PrevKv.Value)
		}
		b.WriteString("\n")
	}
	ls, _, err := s.Leases()
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	for _, id := range ls {
		ttl, err := s.LeaseTimeToLive(id, true, baseTime)
		if err != nil {
			t.Fatalf("lease %d: %v", id, err)
		}
		fmt.Fprintf(&b, "lease %d granted %d keys %q\n", id, ttl.GrantedTTL, ttl.Keys)
	}
	return b.String()
}
