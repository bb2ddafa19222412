package raft

import (
	"errors"
	"testing"
)

// Dissertation §3.10: the leader catches the target up, sends MsgTimeoutNow, and the target wins
// an election at once (its vote requests pass the lease check).
func TestTransferLeadership(t *testing.T) {
	nw := newNetwork(t, 3, withCheckQuorum, withPreVote)
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	nw.propose(1, "x")
	nw.down[3] = false
	// The target is behind: the leader first catches it up.
	if err := nw.node(1).TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if nw.status(1).LeadTransferee != 3 {
		t.Fatalf("LeadTransferee %d", nw.status(1).LeadTransferee)
	}
	nw.stabilize()
	if nw.leader() != 3 {
		t.Fatalf("leader %d after transfer\n%s", nw.leader(), nw)
	}
	if got := nw.appliedData(3); len(got) != 1 || got[0] != "x" {
		t.Fatalf("transferee applied %v", got)
	}
}

// A follower forwards the request (MsgTransferLeader) to the leader.
func TestTransferLeadershipForwarded(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	if err := nw.node(2).TransferLeadership(2); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	if nw.leader() != 2 {
		t.Fatalf("leader %d", nw.leader())
	}
}

// During a transfer the leader refuses proposals; the transfer aborts after an election timeout if
// the target does not take over, and proposals are accepted again.
func TestTransferBlocksProposalsAndTimesOut(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	if err := nw.node(1).TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	err := nw.node(1).Propose([]byte("x"))
	if !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("proposal during transfer: %v", err)
	}
	nw.tick(10)
	if st := nw.status(1); st.LeadTransferee != None || st.SoftState.State != StateLeader {
		t.Fatalf("after timeout: transferee %d state %v", st.LeadTransferee, st.SoftState.State)
	}
	if err := nw.node(1).Propose([]byte("x")); err != nil {
		t.Fatalf("proposal after the transfer aborted: %v", err)
	}
	if err := nw.node(1).TransferLeadership(9); err == nil {
		t.Fatal("transfer to a non-member accepted")
	}
}
