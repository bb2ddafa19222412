package raft

import (
	"fmt"
	"slices"
	"testing"
)

// A member must not campaign while a committed configuration change is unapplied: the
// configuration it is about to adopt may not count it as a voter, or may have other voters than
// the one it would count votes in. The restarted node here is a voter in the configuration it
// holds (a snapshot of {1,2,3}), so only that guard stands between it and a campaign, both when
// asked (Campaign) and on its election timeout (Tick).
func TestNoCampaignWithCommittedConfChangeUnapplied(t *testing.T) {
	for _, preVote := range []bool{false, true} {
		nw := newNetwork(t, 3, func(c *Config) { c.PreVote = preVote })
		nw.stabilize()
		nw.campaign(1)
		nw.propose(1, "before")
		snap := nw.compact(2, 8) // node 2 restarts from this snapshot: voters {1,2,3}
		addNode(nw, 4)
		nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}})
		nw.tick(2) // node 2 learns that the change committed
		if st := nw.status(2); st.Applied <= snap.Meta.Index || st.HardState.Commit != st.Applied {
			t.Fatalf("node 2 did not commit and apply the change: %+v", st)
		}

		cfg := nw.cfgs[2]
		cfg.Applied = snap.Meta.Index
		n, err := New(cfg, nw.storage[2].state())
		if err != nil {
			t.Fatal(err)
		}
		st := n.Status()
		if !slices.Equal(st.ConfState.Voters, []NodeID{1, 2, 3}) || len(st.ConfState.Learners) != 0 || st.HardState.Commit <= st.Applied {
			t.Fatalf("restart should hold {1,2,3} with the change committed and unapplied: %+v", st)
		}
		term := st.HardState.Term
		if err := n.Campaign(); err == nil {
			t.Fatalf("preVote=%v: Campaign accepted with committed configuration entries unapplied", preVote)
		}
		// Several election timeouts without taking a Ready: the change stays unapplied.
		for range 4 * cfg.ElectionTick {
			n.Tick()
		}
		if st := n.Status(); st.SoftState.State != StateFollower || st.HardState.Term != term {
			t.Fatalf("preVote=%v: campaigned on its election timeout with a committed change unapplied: %v term %d (was %d)",
				preVote, st.SoftState.State, st.HardState.Term, term)
		}
		// Once applied, the same node campaigns as usual.
		drain(n)
		if cs := n.Status().ConfState; !slices.Equal(cs.Learners, []NodeID{4}) {
			t.Fatalf("config after applying: %+v", cs)
		}
		if err := n.Campaign(); err != nil {
			t.Fatalf("campaign after applying: %v", err)
		}
		if st := n.Status().SoftState.State; st != StateCandidate && st != StatePreCandidate {
			t.Fatalf("state after campaigning: %v", st)
		}
	}
}

// The leader's record of how far a follower's log matches (Progress.Match) never goes down: an
// acknowledgement is a fact about a log that only a later term can truncate, so an older,
// duplicated or reordered MsgAppResp with a lower index must change nothing, and must not send
// Next back to or below Match either.
func TestLeaderMatchNeverDecreases(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	var acks []Message // node 2's acceptances, in delivery order
	nw.trace = func(m Message) {
		if m.Type == MsgAppResp && m.From == 2 && m.To == 1 && !m.Reject {
			acks = append(acks, m)
		}
	}
	for _, p := range []string{"a", "b", "c", "d"} {
		nw.propose(1, p)
	}
	nw.trace = nil
	if len(acks) < 3 {
		t.Fatalf("only %d acknowledgements from node 2 recorded", len(acks))
	}
	want := nw.status(1).Progress[2]
	if want.Match != nw.status(1).LastIndex {
		t.Fatalf("node 2 not caught up: %+v", want)
	}
	check := func(what string) {
		t.Helper()
		got := nw.status(1).Progress[2]
		if got.Match < want.Match || got.Next <= got.Match {
			t.Fatalf("%s: node 2's progress went from %+v to %+v", what, want, got)
		}
	}
	// Stale acknowledgements, newest first (a reordering), each delivered twice (a duplicate).
	for i := len(acks) - 2; i >= 0; i-- {
		for range 2 {
			if err := nw.node(1).Step(acks[i]); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("stale acknowledgement of %d", acks[i].Index))
		}
	}
	// A stale rejection of an index below Match (an answer to an old probe) as well.
	old := acks[0]
	old.Reject, old.RejectHint, old.LogTerm = true, old.Index-1, 0
	if err := nw.node(1).Step(old); err != nil {
		t.Fatal(err)
	}
	check("stale rejection")
	// And the cluster still works: the leader sends what it must and the follower stays matched.
	nw.stabilize()
	nw.propose(1, "e")
	if got := nw.status(1).Progress[2]; got.Match != nw.status(1).LastIndex {
		t.Fatalf("node 2 not matched after the stale responses: %+v (last %d)", got, nw.status(1).LastIndex)
	}
	nw.checkApplied()
}
