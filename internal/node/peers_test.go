package node

import (
	"maps"
	"testing"

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
