package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// memNet connects in-process members; cut links drop messages.
type memNet struct {
	mu    sync.Mutex
	nodes map[raft.NodeID]*Node
	cut   map[[2]raft.NodeID]bool
}

type memTransport struct {
	net  *memNet
	from raft.NodeID
}

func (t memTransport) Send(msgs []raft.Message) {
	for _, m := range msgs {
		t.net.mu.Lock()
		dst, cut := t.net.nodes[m.To], t.net.cut[[2]raft.NodeID{t.from, m.To}]
		t.net.mu.Unlock()
		if dst != nil && !cut {
			dst.Step(m)
		}
	}
}
func (memTransport) AddPeer(raft.NodeID, string) {}
func (memTransport) RemovePeer(raft.NodeID)      {}

// isolate cuts id off from the others, or heals every link.
func (nw *memNet) isolate(id raft.NodeID, on bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for o := range nw.nodes {
		if o != id {
			nw.cut[[2]raft.NodeID{id, o}] = on
			nw.cut[[2]raft.NodeID{o, id}] = on
		}
	}
}

// startThree starts a three-member cluster connected by a memNet, each with a memSM.
func startThree(t *testing.T) (*memNet, []*Node, map[raft.NodeID]*memSM) {
	t.Helper()
	members := []Member{{ID: 1, Name: "n1"}, {ID: 2, Name: "n2"}, {ID: 3, Name: "n3"}}
	for i := range members {
		members[i].PeerURLs = []string{fmt.Sprintf("http://127.0.0.1:%d", i+1)}
	}
	nw := &memNet{nodes: map[raft.NodeID]*Node{}, cut: map[[2]raft.NodeID]bool{}}
	var nodes []*Node
	sms := map[raft.NodeID]*memSM{}
	for _, m := range members {
		sm := newMemSM(t, m.ID)
		sm.peers = map[raft.NodeID][]string{}
		for _, o := range members {
			sm.peers[o.ID] = o.PeerURLs
		}
		sms[m.ID] = sm
		rc := raft.DefaultConfig(m.ID)
		rc.HeartbeatTick, rc.ElectionTick = 1, 5
		rc.CheckQuorum = false // a cut-off leader keeps leading (and appending) until it hears of a newer term
		rc.Seed = uint64(m.ID)
		rc.Logger = quiet()
		n, err := Open(OpenConfig{
			Config: Config{
				Raft:         rc,
				TickInterval: 5 * time.Millisecond,
				PeerAddr:     peerAddr,
				Logger:       quiet(),
			},
			DataDir:          t.TempDir(),
			NewCluster:       true,
			InitialMembers:   members,
			OpenStateMachine: func() (StateMachine, error) { return sm, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		nw.mu.Lock()
		nw.nodes[m.ID] = n
		nw.mu.Unlock()
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.SetTransport(memTransport{net: nw, from: n.ID()}, members)
		n.Start()
		t.Cleanup(n.Stop)
	}
	return nw, nodes, sms
}

// waitLeader polls (the members run on wall-clock ticks) until a member other than not leads,
// as every member that is not cut off agrees.
func waitLeader(t *testing.T, nodes []*Node, not raft.NodeID) *Node {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.ID() != not && n.Leader() == n.ID() {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no leader within 10s")
	return nil
}

// TestLostProposalFailsFast: a leader cut off from its followers appends a write it cannot
// commit; the others elect a new leader, whose first entry lands at the same index. Once the old
// leader hears of it, its write is provably not applied and must fail at once as unavailable
// (so that the client retries), not at its deadline.
func TestLostProposalFailsFast(t *testing.T) {
	nw, nodes, sms := startThree(t)
	old := waitLeader(t, nodes, raft.None)
	putAll(t, old, 0, 3)
	nw.isolate(old.ID(), true)
	before := old.Status().LastIndex
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		id := old.NextProposalID()
		_, err := old.Propose(ctx, id, encodeEntry(id, old.ID(), "lost", "v"))
		res <- err
	}()
	// The cut-off leader appends it (its status is refreshed on its ticks: poll).
	for deadline := time.Now().Add(10 * time.Second); old.Status().LastIndex <= before; {
		if time.Now().After(deadline) {
			t.Fatal("the cut-off leader did not append the write within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// The others elect a leader of a newer term and commit a write of their own.
	lead := waitLeader(t, nodes, old.ID())
	putAll(t, lead, 3, 4)
	start := time.Now()
	nw.isolate(old.ID(), false)
	err := <-res
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errProposalLost) {
		t.Fatalf("the overwritten write returned %v after %s; want unavailable, not applied", err, time.Since(start))
	}
	// And it was indeed not applied anywhere.
	checkAll(t, lead, sms[lead.ID()], 4)
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.LinearizableRead(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := sms[n.ID()].get("lost"); ok {
			t.Fatalf("member %d: the lost write reads back as %q", n.ID(), v)
		}
	}
}
