package mvcc

import (
	"fmt"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

func TestChanges(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("a", "1")                                                                              // 2
	h.put("a", "2")                                                                              // 3
	h.ok(cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opPut("b", "1"), opDel("a", "")}})) // 4
	h.put("c", "1")                                                                              // 5
	desc := func(evs []Change) string {
		s := ""
		for _, e := range evs {
			s += fmt.Sprintf("%d:%s@%d=%s", e.Type, e.Kv.Key, e.Kv.ModRevision, e.Kv.Value)
			if e.PrevKv != nil {
				s += fmt.Sprintf("(prev %s@%d)", e.PrevKv.Value, e.PrevKv.ModRevision)
			}
			s += " "
		}
		return s
	}
	evs, rev, err := h.s.Changes(3, 2, true)
	if err != nil || rev != 5 {
		t.Fatalf("Changes: %v rev %d", err, rev)
	}
	// max 2 would cut revision 4 in half: its two events come together.
	if got, want := desc(evs), "0:a@3=2(prev 1@2) 0:b@4=1 1:a@4=(prev 2@3) "; got != want {
		t.Fatalf("events = %q, want %q", got, want)
	}
	evs, _, _ = h.s.Changes(5, 10, false)
	if got := desc(evs); got != "0:c@5=1 " {
		t.Fatalf("events from 5 = %q", got)
	}
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: 4}))
	_, _, err = h.s.Changes(4, 10, false)
	wantErr(t, err, ErrCompacted)
	if evs, _, err := h.s.Changes(5, 10, true); err != nil || len(evs) != 1 {
		t.Fatalf("events above compaction: %v %v", evs, err)
	}
}
