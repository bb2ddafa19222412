package raft

import (
	"errors"
	"testing"
)

// newSingle returns a bootstrapped node of a cluster of the given voters whose first Ready has been
// handled, so that the bootstrap configuration is applied.
func newSingle(t *testing.T, id NodeID, voters []NodeID, opts ...cfgOpt) *Node {
	t.Helper()
	cfg := testConfig(id, opts...)
	cfg.InitialVoters = voters
	n, err := New(cfg, PersistentState{})
	if err != nil {
		t.Fatal(err)
	}
	drain(n)
	return n
}

// drain handles every pending Ready of n without delivering messages and returns them all.
func drain(n *Node) []Ready {
	var out []Ready
	for n.HasReady() {
		rd := n.Ready()
		n.Advance(rd)
		out = append(out, rd)
	}
	return out
}

func msgsOf(rds []Ready, typ MessageType, afterPersist bool) []Message {
	var out []Message
	for _, rd := range rds {
		ms := rd.Messages
		if afterPersist {
			ms = rd.MessagesAfterPersist
		}
		for _, m := range ms {
			if m.Type == typ {
				out = append(out, m)
			}
		}
	}
	return out
}

// Paper §5.2: a follower that hears nothing for an election timeout, randomized in
// [ElectionTick, 2*ElectionTick), becomes a candidate.
func TestElectionTimeoutRandomizedInRange(t *testing.T) {
	seen := map[int]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		n := newSingle(t, 1, []NodeID{1, 2, 3}, func(c *Config) { c.Seed = seed })
		ticks := 0
		for n.Status().SoftState.State == StateFollower {
			n.Tick()
			ticks++
			if ticks > 100 {
				t.Fatalf("seed %d: no campaign after 100 ticks", seed)
			}
		}
		if ticks < 10 || ticks >= 20 {
			t.Fatalf("seed %d: campaigned after %d ticks, want [10, 20)", seed, ticks)
		}
		seen[ticks] = true
	}
	if len(seen) < 5 {
		t.Fatalf("timeouts not randomized: only %v seen", seen)
	}
}

// Paper §5.2 and Figure 2: the candidate increments its term, votes for itself and requests votes;
// the vote is in HardState and counts only after it is persisted.
func TestCampaignPersistsOwnVoteFirst(t *testing.T) {
	n := newSingle(t, 1, []NodeID{1})
	if err := n.Campaign(); err != nil {
		t.Fatal(err)
	}
	rd := n.Ready()
	if rd.HardState.Term != 2 || rd.HardState.Vote != 1 || !rd.MustSync {
		t.Fatalf("first Ready HardState %+v MustSync %v, want term 2 vote 1 synced", rd.HardState, rd.MustSync)
	}
	if st := n.Status().SoftState.State; st != StateCandidate {
		t.Fatalf("state before persisting the vote: %v, want candidate", st)
	}
	n.Advance(rd)
	if st := n.Status().SoftState.State; st != StateLeader {
		t.Fatalf("state after persisting the vote: %v, want leader", st)
	}
}

// Figure 2 RequestVote: the grant is recorded in HardState and sent only after persisting
// (MessagesAfterPersist), never in Messages.
func TestVoteResponseAfterPersist(t *testing.T) {
	n := newSingle(t, 2, []NodeID{1, 2, 3})
	if err := n.Step(Message{Type: MsgVote, From: 1, To: 2, Term: 5, Index: 1, LogTerm: 1}); err != nil {
		t.Fatal(err)
	}
	rd := n.Ready()
	if rd.HardState.Term != 5 || rd.HardState.Vote != 1 || !rd.MustSync {
		t.Fatalf("HardState %+v MustSync %v", rd.HardState, rd.MustSync)
	}
	if len(msgsOf([]Ready{rd}, MsgVoteResp, false)) != 0 {
		t.Fatalf("vote response in Messages: %+v", rd.Messages)
	}
	resp := msgsOf([]Ready{rd}, MsgVoteResp, true)
	if len(resp) != 1 || resp[0].Reject || resp[0].Term != 5 || resp[0].To != 1 {
		t.Fatalf("MessagesAfterPersist vote responses %+v", resp)
	}
}

// Figure 2 RequestVote rule 2: at most one vote per term; the same candidate may ask again.
func TestOneVotePerTerm(t *testing.T) {
	n := newSingle(t, 3, []NodeID{1, 2, 3})
	step := func(from NodeID) Message {
		t.Helper()
		if err := n.Step(Message{Type: MsgVote, From: from, To: 3, Term: 2, Index: 1, LogTerm: 1}); err != nil {
			t.Fatal(err)
		}
		resp := msgsOf(drain(n), MsgVoteResp, true)
		if len(resp) != 1 {
			t.Fatalf("responses %+v", resp)
		}
		return resp[0]
	}
	if m := step(1); m.Reject {
		t.Fatal("first vote rejected")
	}
	if m := step(2); !m.Reject {
		t.Fatal("second candidate in the same term granted")
	}
	if m := step(1); m.Reject {
		t.Fatal("repeated request from the voted-for candidate rejected")
	}
}

// Paper §5.4.1: a vote is denied to a candidate whose log is less up-to-date (lower last term, or
// same last term and shorter).
func TestVoteRequiresUpToDateLog(t *testing.T) {
	for _, tc := range []struct {
		name           string
		index, logTerm uint64
		grant          bool
	}{
		{"higher last term, shorter", 1, 3, true},
		{"same term, same length", 3, 2, true},
		{"same term, longer", 4, 2, true},
		{"same term, shorter", 2, 2, false},
		{"lower last term, longer", 10, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Voter log: [1:1 conf] [2:2] [3:2]
			n := newSingle(t, 2, []NodeID{1, 2, 3})
			if err := n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
				Entries: []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2, Data: []byte("x")}}}); err != nil {
				t.Fatal(err)
			}
			drain(n)
			if err := n.Step(Message{Type: MsgVote, From: 3, To: 2, Term: 4, Index: tc.index, LogTerm: tc.logTerm}); err != nil {
				t.Fatal(err)
			}
			resp := msgsOf(drain(n), MsgVoteResp, true)
			if len(resp) != 1 || resp[0].Reject == tc.grant {
				t.Fatalf("responses %+v, want grant=%v", resp, tc.grant)
			}
		})
	}
}

// Paper §5.2: a cluster elects exactly one leader, and a candidate that sees a leader of its term
// steps down.
func TestElectionThroughTicks(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		nw := newNetwork(t, 5, func(c *Config) { c.Seed = c.Seed*1000 + seed })
		nw.stabilize()
		nw.tick(40)
		leaders := 0
		var term uint64
		for _, id := range nw.ids {
			st := nw.status(id)
			if st.SoftState.State == StateLeader {
				leaders++
				term = st.HardState.Term
			}
		}
		if leaders != 1 {
			t.Fatalf("seed %d: %d leaders\n%s", seed, leaders, nw)
		}
		for _, id := range nw.ids {
			st := nw.status(id)
			if st.HardState.Term != term || st.SoftState.Lead != nw.leader() {
				t.Fatalf("seed %d: node %d disagrees\n%s", seed, id, nw)
			}
		}
	}
}

// Paper §5.2: a candidate that cannot get a majority does not become leader.
func TestCandidateWithoutMajority(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.isolate(1)
	nw.campaign(1)
	if st := nw.status(1).SoftState.State; st != StateCandidate {
		t.Fatalf("isolated candidate is %v", st)
	}
}

// Dissertation §9.6: with pre-vote, a partitioned node does not increase its term, so rejoining
// does not depose the leader.
func TestPreVotePartitionedNodeKeepsTerm(t *testing.T) {
	nw := newNetwork(t, 3, withPreVote)
	nw.stabilize()
	nw.campaign(1)
	term := nw.status(1).HardState.Term
	nw.isolate(3)
	nw.tick(100)
	if st := nw.status(3); st.HardState.Term != term || st.SoftState.State != StatePreCandidate {
		t.Fatalf("partitioned node: term %d state %v, want term %d pre-candidate", st.HardState.Term, st.SoftState.State, term)
	}
	nw.heal()
	nw.tick(5)
	if nw.leader() != 1 || nw.status(1).HardState.Term != term {
		t.Fatalf("leader disrupted after heal\n%s", nw)
	}
}

// Contrast for §9.6: without pre-vote the partitioned node's term grows and it disrupts the
// leader when it rejoins.
func TestWithoutPreVotePartitionedNodeDisrupts(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	term := nw.status(1).HardState.Term
	nw.isolate(3)
	nw.tick(100)
	if nw.status(3).HardState.Term <= term {
		t.Fatalf("partitioned node term did not grow")
	}
	nw.heal()
	nw.tick(25)
	if nw.status(1).HardState.Term == term {
		t.Fatalf("leader not disrupted (term %d)", term)
	}
}

// Dissertation §9.6: a pre-vote is granted only to a log at least as up-to-date, and a pre-vote
// grant does not record a vote or change the voter's term.
func TestPreVoteGrantChangesNothing(t *testing.T) {
	n := newSingle(t, 2, []NodeID{1, 2, 3}, withPreVote)
	before := n.Status().HardState
	if err := n.Step(Message{Type: MsgPreVote, From: 3, To: 2, Term: 2, Index: 1, LogTerm: 1}); err != nil {
		t.Fatal(err)
	}
	rds := drain(n)
	resp := msgsOf(rds, MsgPreVoteResp, false)
	if len(resp) != 1 || resp[0].Reject || resp[0].Term != 2 {
		t.Fatalf("pre-vote responses %+v", resp)
	}
	if after := n.Status().HardState; after != before {
		t.Fatalf("HardState changed by a pre-vote: %+v -> %+v", before, after)
	}
}

// Dissertation §6.2 (check-quorum): a leader that hears from no quorum for an election timeout
// steps down.
func TestCheckQuorumLeaderStepsDown(t *testing.T) {
	nw := newNetwork(t, 3, withCheckQuorum)
	nw.stabilize()
	nw.campaign(1)
	nw.isolate(1)
	nw.tick(25)
	if st := nw.status(1).SoftState.State; st == StateLeader {
		t.Fatal("isolated leader did not step down")
	}
}

// Dissertation §4.2.3: with check-quorum a follower that heard from the leader within the election
// timeout ignores vote requests, unless they come from a leadership transfer.
func TestLeaseRejectsVotesExceptTransfer(t *testing.T) {
	nw := newNetwork(t, 3, withCheckQuorum)
	nw.stabilize()
	nw.campaign(1)
	n2 := nw.node(2)
	term := nw.status(2).HardState.Term
	if err := n2.Step(Message{Type: MsgVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100}); err != nil {
		t.Fatal(err)
	}
	if st := nw.status(2); st.HardState.Term != term || st.HardState.Vote == 3 {
		t.Fatalf("vote request within the lease changed state: %+v", st.HardState)
	}
	if err := n2.Step(Message{Type: MsgVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100, Context: campaignTransferContext}); err != nil {
		t.Fatal(err)
	}
	if st := nw.status(2); st.HardState.Term != term+1 || st.HardState.Vote != 3 {
		t.Fatalf("transfer vote not granted: %+v", st.HardState)
	}
}

// A removed or learner node cannot campaign.
func TestCampaignRequiresVoter(t *testing.T) {
	cfg := testConfig(9)
	n, err := New(cfg, PersistentState{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Campaign(); err == nil {
		t.Fatal("non-member campaigned")
	}
	for range 100 {
		n.Tick()
	}
	if n.Status().SoftState.State != StateFollower {
		t.Fatal("non-member left follower state by ticking")
	}
}

// Paper §5.1: a stale-term message is ignored; with pre-vote/check-quorum the stale leader is told
// the newer term so it steps down.
func TestStaleLeaderLearnsTerm(t *testing.T) {
	n := newSingle(t, 2, []NodeID{1, 2, 3}, withPreVote)
	if err := n.Step(Message{Type: MsgHeartbeat, From: 3, To: 2, Term: 5}); err != nil {
		t.Fatal(err)
	}
	drain(n)
	if err := n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 3}}}); err != nil {
		t.Fatal(err)
	}
	rds := drain(n)
	resp := msgsOf(rds, MsgAppResp, false)
	if len(resp) != 1 || resp[0].Term != 5 || resp[0].To != 1 {
		t.Fatalf("responses to a stale append: %+v", resp)
	}
	if n.Status().LastIndex != 1 {
		t.Fatal("stale append was accepted")
	}
}

func TestStepRejectsMisaddressed(t *testing.T) {
	n := newSingle(t, 1, []NodeID{1})
	if err := n.Step(Message{Type: MsgHeartbeat, From: 2, To: 3, Term: 1}); err == nil {
		t.Fatal("misaddressed message accepted")
	}
	var nle *NotLeaderError
	if err := n.Propose([]byte("x")); !errors.As(err, &nle) {
		t.Fatalf("proposal on a leaderless follower: %v", err)
	}
}

// Dissertation §9.6: with pre-vote, a follower that heard from its leader within the election
// timeout does not grant pre-votes (even without check-quorum), so a node that merely lost contact
// cannot start a disruptive election.
func TestPreVoteIgnoredWithinLease(t *testing.T) {
	nw := newNetwork(t, 3, withPreVote)
	nw.stabilize()
	nw.campaign(1)
	n2 := nw.node(2)
	term := nw.status(2).HardState.Term
	if err := n2.Step(Message{Type: MsgPreVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100}); err != nil {
		t.Fatal(err)
	}
	if got := msgsOf(drain(n2), MsgPreVoteResp, false); len(got) != 0 {
		t.Fatalf("pre-vote answered within the lease: %+v", got)
	}
	// After an election timeout of silence from the leader, it is granted.
	for range 10 {
		n2.Tick()
	}
	drain(n2)
	if err := n2.Step(Message{Type: MsgPreVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100}); err != nil {
		t.Fatal(err)
	}
	if got := msgsOf(drain(n2), MsgPreVoteResp, false); len(got) != 1 || got[0].Reject {
		t.Fatalf("pre-vote after the lease: %+v", got)
	}
}
