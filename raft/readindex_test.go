package raft

import (
	"errors"
	"testing"
)

func readCtxs(rs []ReadState) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.RequestCtx))
	}
	return out
}

// Dissertation §6.4: the leader records its commit index, confirms leadership with a heartbeat
// round to a quorum, then answers with that index.
func TestReadIndexOnLeaderNeedsQuorumRound(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.propose(1, "x")
	commit := nw.status(1).HardState.Commit
	// No follower reachable: no answer.
	nw.isolate(1)
	if err := nw.node(1).ReadIndex([]byte("r1")); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	if len(nw.readStates[1]) != 0 {
		t.Fatalf("answered without a quorum: %+v", nw.readStates[1])
	}
	// One follower acks the next heartbeat (which carries the pending context): quorum.
	nw.heal()
	nw.isolate(3)
	nw.tick(1)
	if rs := nw.readStates[1]; len(rs) != 1 || string(rs[0].RequestCtx) != "r1" || rs[0].Index != commit {
		t.Fatalf("read states %+v, want r1 at %d", rs, commit)
	}
}

// Dissertation §6.4 step 1: a new leader answers only after committing an entry of its term.
func TestReadIndexWaitsForLeaderCommitInTerm(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.drop = func(m Message) bool { return m.Type == MsgApp }
	nw.campaign(1)
	if err := nw.node(1).ReadIndex([]byte("early")); err != nil {
		t.Fatal(err)
	}
	nw.tick(2)
	if len(nw.readStates[1]) != 0 {
		t.Fatalf("answered before committing in term: %+v", nw.readStates[1])
	}
	nw.drop = nil
	nw.tick(2)
	rs := nw.readStates[1]
	if len(rs) != 1 || rs[0].Index != 2 {
		t.Fatalf("read states %+v, want one at the no-op (2)", rs)
	}
}

// Dissertation §6.4: a follower asks the leader (MsgReadIndex) and gets the index back
// (MsgReadIndexResp), producing a ReadState; without a leader it gets *NotLeaderError.
func TestReadIndexOnFollower(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	n3 := nw.node(3)
	var nle *NotLeaderError
	if err := n3.ReadIndex([]byte("none")); !errors.As(err, &nle) {
		t.Fatalf("read without a leader: %v", err)
	}
	nw.campaign(1)
	nw.propose(1, "x")
	var types []MessageType
	nw.trace = func(m Message) {
		if m.Type == MsgReadIndex || m.Type == MsgReadIndexResp {
			types = append(types, m.Type)
		}
	}
	if err := n3.ReadIndex([]byte("f1")); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	rs := nw.readStates[3]
	if len(rs) != 1 || string(rs[0].RequestCtx) != "f1" || rs[0].Index != nw.status(1).HardState.Commit {
		t.Fatalf("follower read states %+v", rs)
	}
	if len(types) != 2 || types[0] != MsgReadIndex || types[1] != MsgReadIndexResp {
		t.Fatalf("messages %v", types)
	}
}

// A single-voter cluster answers at once; ReadOnlyLeaseBased answers without a round.
func TestReadIndexSingleVoterAndLease(t *testing.T) {
	s := newSingle(t, 1, []NodeID{1})
	if err := s.Campaign(); err != nil {
		t.Fatal(err)
	}
	drain(s)
	if err := s.ReadIndex([]byte("s")); err != nil {
		t.Fatal(err)
	}
	rds := drain(s)
	if len(rds) == 0 || len(rds[0].ReadStates) != 1 || rds[0].ReadStates[0].Index != 2 {
		t.Fatalf("single voter read: %+v", rds)
	}

	nw := newNetwork(t, 3, withCheckQuorum, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	nw.stabilize()
	nw.campaign(1)
	nw.isolate(1)
	if err := nw.node(1).ReadIndex([]byte("lease")); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	if got := readCtxs(nw.readStates[1]); len(got) != 1 || got[0] != "lease" {
		t.Fatalf("lease read: %v", got)
	}
}

// Requests answered by one quorum round include every earlier pending request, in order.
func TestReadIndexBatchedInOrder(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.isolate(1)
	for _, c := range []string{"a", "b", "c"} {
		if err := nw.node(1).ReadIndex([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	nw.stabilize()
	nw.heal()
	nw.tick(1)
	if got := readCtxs(nw.readStates[1]); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("read order %v", got)
	}
}

// Dissertation §6.4.1 and §3.10: during a leadership transfer the lease does not hold (the
// transferee's campaign bypasses it), so a lease read falls back to a quorum round.
func TestLeaseReadDuringTransferNeedsQuorum(t *testing.T) {
	nw := newNetwork(t, 3, withCheckQuorum, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	if err := nw.node(1).TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	nw.isolate(1)
	if err := nw.node(1).ReadIndex([]byte("t")); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	if len(nw.readStates[1]) != 0 {
		t.Fatalf("lease read answered during a transfer without a quorum: %+v", nw.readStates[1])
	}
	nw.heal()
	nw.tick(1)
	if got := readCtxs(nw.readStates[1]); len(got) != 1 || got[0] != "t" {
		t.Fatalf("read after a quorum round: %v", got)
	}
}
