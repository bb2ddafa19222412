package mvcc

import (
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRevChanged: the channel closes at a commit that publishes a new revision or compacts, not
// at one that changes neither (a lease keep-alive), and a new wait gets a new channel.
func TestRevChanged(t *testing.T) {
	h := newHarness(t, Options{})
	ch := h.s.RevChanged()
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Id: 5, Ttl: 60}))
	h.ok(cmdOf(&logpb.LeaseKeepAliveRequest{Id: 5}))
	if closed(ch) {
		t.Fatal("closed by commits that changed no revision")
	}
	h.put("k", "v")
	if !closed(ch) {
		t.Fatal("not closed by a put")
	}
	ch = h.s.RevChanged()
	if closed(ch) {
		t.Fatal("a new wait starts closed")
	}
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	if !closed(ch) {
		t.Fatal("not closed by a compaction")
	}
}
