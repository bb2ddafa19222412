package raft

import "testing"

// The planted bugs (Config.Bugs) must each change behaviour exactly as documented, so that the
// simulator's checkers have something to catch. Each test shows the correct behaviour with the
// switch off and the broken one with it on.

func TestBugVoteForShorterLog(t *testing.T) {
	for _, bug := range []bool{false, true} {
		n := newSingle(t, 2, []NodeID{1, 2, 3}, func(c *Config) { c.Bugs.VoteForShorterLog = bug })
		if err := n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2}}}); err != nil {
			t.Fatal(err)
		}
		drain(n)
		if err := n.Step(Message{Type: MsgVote, From: 3, To: 2, Term: 3, Index: 1, LogTerm: 1}); err != nil {
			t.Fatal(err)
		}
		resp := msgsOf(drain(n), MsgVoteResp, true)
		if len(resp) != 1 || resp[0].Reject == bug {
			t.Fatalf("bug=%v: responses %+v", bug, resp)
		}
	}
}

func TestBugVoteNotPersisted(t *testing.T) {
	n := newSingle(t, 2, []NodeID{1, 2, 3}, func(c *Config) { c.Bugs.VoteNotPersisted = true })
	if err := n.Step(Message{Type: MsgVote, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1}); err != nil {
		t.Fatal(err)
	}
	rd := n.Ready()
	if rd.HardState.Vote != None {
		t.Fatalf("vote persisted despite the bug: %+v", rd.HardState)
	}
	if len(msgsOf([]Ready{rd}, MsgVoteResp, false)) != 1 || len(msgsOf([]Ready{rd}, MsgVoteResp, true)) != 0 {
		t.Fatalf("vote response not sent before persisting: %+v / %+v", rd.Messages, rd.MessagesAfterPersist)
	}
	n.Advance(rd)
}

func TestBugApplyBeforeCommit(t *testing.T) {
	for _, bug := range []bool{false, true} {
		nw := newNetwork(t, 3, func(c *Config) { c.Bugs.ApplyBeforeCommit = bug })
		nw.stabilize()
		nw.campaign(1)
		nw.down[2], nw.down[3] = true, true
		if err := nw.node(1).Propose([]byte("uncommitted")); err != nil {
			t.Fatal(err)
		}
		nw.stabilize()
		got := nw.appliedData(1)
		if bug != (len(got) == 1) {
			t.Fatalf("bug=%v: applied %v with no quorum", bug, got)
		}
	}
}

func TestBugReadIndexWithoutQuorum(t *testing.T) {
	for _, bug := range []bool{false, true} {
		nw := newNetwork(t, 3, func(c *Config) { c.Bugs.ReadIndexWithoutQuorum = bug })
		nw.stabilize()
		nw.campaign(1)
		nw.isolate(1)
		if err := nw.node(1).ReadIndex([]byte("r")); err != nil {
			t.Fatal(err)
		}
		nw.stabilize()
		if bug != (len(nw.readStates[1]) == 1) {
			t.Fatalf("bug=%v: read states %+v while isolated", bug, nw.readStates[1])
		}
	}
}
