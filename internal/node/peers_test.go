package node

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// TestSyncPeers: the transport's peers follow the state machine's membership (added, readdressed,
// removed, never this member itself), except while the state machine knows no members: a member
// joining with an empty data directory reaches the leader through its initial members.
func TestSyncPeers(t *testing.T) {
	sm := newMemSM(t, 1)
	tr := &recordingTransport{peers: map[raft.NodeID]string{}}
	n := &Node{id: 1, sm: sm, peers: map[raft.NodeID]string{}, cfg: Config{PeerAddr: peerAddr}}
	n.trans = tr
	initial := []Member{{ID: 1, PeerURLs: []string{"a1"}}, {ID: 2, PeerURLs: []string{"a2"}}, {ID: 3, PeerURLs: []string{"a3"}}}
	n.SetTransport(tr, initial)
	want := map[raft.NodeID]string{2: "a2", 3: "a3"}
	if !maps.Equal(tr.peers, want) {
		t.Fatalf("initial peers %v, want %v (the state machine knows no members)", tr.peers, want)
	}
	sm.peers = map[raft.NodeID][]string{1: {"a1"}, 2: {"a2b"}, 4: {"a4"}}
	n.syncPeers()
	want = map[raft.NodeID]string{2: "a2b", 4: "a4"}
	if !maps.Equal(tr.peers, want) {
		t.Fatalf("after a membership change: peers %v, want %v", tr.peers, want)
	}
	sm.peers = map[raft.NodeID][]string{1: {"a1"}, 4: {"a4"}, 5: nil}
	n.syncPeers()
	want = map[raft.NodeID]string{4: "a4"}
	if !maps.Equal(tr.peers, want) {
		t.Fatalf("after a removal: peers %v, want %v (a member without peer URLs is not reachable)", tr.peers, want)
	}
}

// TestProposalAnsweredAgain: a proposal whose entry applies more than once (a duplicated
// forward) is answered once, and the loop never waits on another answer: later proposals
// complete.
func TestProposalAnsweredAgain(t *testing.T) {
	sm := newMemSM(t, 1)
	sm.answerThrice = true
	n := startSingleWith(t, singleConfig(t, t.TempDir(), 0, sm))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := 0; i < 20; i++ {
			id := n.NextProposalID()
			if _, err := n.Propose(ctx, id, encodeEntry(id, n.ID(), keyName(i), valueOf(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// The loop is stuck on an answer nobody reads; stopping it would hang too.
		t.Fatal("proposals answered more than once stalled the loop")
	}
	checkAll(t, n, sm, 20)
	n.Stop()
}
