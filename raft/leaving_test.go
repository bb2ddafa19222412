package raft

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// A leader that applies a configuration without itself as a voter leads until a voter replaces
// it (leaving.go). These tests hold it there and check what it does meanwhile.

// newLeavingJointNetwork sets up the stall the simulator found when a leader stepped down as
// soon as it applied its own removal. The joint configuration has incoming voters {3,4,5} and
// outgoing {1,2,3}: the leader, 1, is in the outgoing half only, and 1 and 2 become learners
// when it is left. 1 appends the entry leaving it and one more entry; 4 and 5 get the first
// only, 2 gets both, 3 is down, and the announcement that the leave committed is lost to 3, 4
// and 5 (the returned drop function keeps losing it). Until they learn it they are joint and
// need two votes of {1,2,3}; 1 and 2 have the longer log and refuse theirs, and as learners
// they never campaign.
func newLeavingJointNetwork(t *testing.T) (nw *network, incoming func(NodeID) bool) {
	t.Helper()
	opts := []cfgOpt{withPreVote, withCheckQuorum}
	nw = newNetwork(t, 3, opts...)
	for _, id := range []NodeID{4, 5} {
		nw.add(testConfig(id, opts...))
	}
	nw.stabilize()
	nw.campaign(1)
	cc := ConfChange{Changes: []ConfChangeSingle{
		{ConfChangeAddVoter, 4}, {ConfChangeAddVoter, 5}, {ConfChangeAddLearner, 1}, {ConfChangeAddLearner, 2},
	}}
	if err := nw.node(1).ProposeConfChange(cc); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	nw.tick(2)
	for _, id := range nw.ids {
		if cs := nw.status(id).ConfState; !slices.Equal(cs.VotersOutgoing, []NodeID{1, 2, 3}) {
			t.Fatalf("node %d is not in the joint configuration: %+v\n%s", id, cs, nw)
		}
	}

	nw.down[3] = true
	leave := nw.status(1).LastIndex + 1
	if err := nw.node(1).ProposeConfChange(ConfChange{}); err != nil {
		t.Fatal(err)
	}
	if err := nw.node(1).Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	incoming = func(id NodeID) bool { return id == 3 || id == 4 || id == 5 }
	nw.drop = func(m Message) bool {
		return incoming(m.To) && (m.Type == MsgApp || m.Type == MsgHeartbeat) && m.Commit >= leave
	}
	nw.rewrite = func(m Message) Message {
		if incoming(m.To) && m.Type == MsgApp {
			m.Entries = slices.DeleteFunc(slices.Clone(m.Entries), func(e Entry) bool { return e.Index > leave })
		}
		return m
	}
	nw.stabilize()
	for _, id := range []NodeID{1, 2} {
		if st := nw.status(id); st.LastIndex != leave+1 || !slices.Contains(st.ConfState.Learners, id) {
			t.Fatalf("node %d did not apply leaving the joint configuration with the entry after it: %+v", id, st)
		}
	}
	for _, id := range []NodeID{4, 5} {
		if st := nw.status(id); st.LastIndex != leave || len(st.ConfState.VotersOutgoing) == 0 || st.HardState.Commit >= leave {
			t.Fatalf("node %d should hold the leave entry, uncommitted, and still be joint: %+v", id, st)
		}
	}
	return nw, incoming
}

// checkLeftJoint checks that a voter of {3,4,5} leads, that the old leader follows it, and that
// a new write is applied everywhere after x.
func checkLeftJoint(t *testing.T, nw *network, incoming func(NodeID) bool, wantX bool) {
	t.Helper()
	l := nw.leader()
	if !incoming(l) {
		t.Fatalf("no leader among the voters {3,4,5} (leader %d)\n%s", l, nw)
	}
	if st := nw.status(1).SoftState; st.State != StateFollower || st.Lead != l {
		t.Fatalf("the old leader is %v following %d, want a follower of %d", st.State, st.Lead, l)
	}
	nw.propose(l, "y")
	want := []string{"y"}
	if wantX {
		want = []string{"x", "y"}
	}
	for _, id := range nw.ids {
		cs := nw.status(id).ConfState
		if !slices.Equal(cs.Voters, []NodeID{3, 4, 5}) || len(cs.VotersOutgoing) != 0 || !slices.Equal(cs.Learners, []NodeID{1, 2}) {
			t.Fatalf("node %d conf %+v", id, cs)
		}
		if got := nw.appliedData(id); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %v, want %v", id, got, want)
		}
	}
	nw.checkApplied()
}

// TestLeavingLeaderUnstallsJoint: once messages flow again, the leader that leads on after
// applying the leave announces the commit, and hands leadership to a voter. (One that stepped
// down at once stalled the cluster for good here.)
func TestLeavingLeaderUnstallsJoint(t *testing.T) {
	nw, incoming := newLeavingJointNetwork(t)
	nw.down[3] = false
	nw.drop, nw.rewrite = nil, nil
	nw.tick(60)
	checkLeftJoint(t, nw, incoming, true)
}

// TestLeavingLeaderDeposedUnstallsJoint: the fault lasts, so check-quorum deposes the leaving
// leader before 3, 4 and 5 learn that the leave committed, and nobody is left to announce it.
// A candidate among them learns it from the refused votes of 1 and 2, which carry their commit
// index (learnCommit), applies the leave, and is elected by {3,4,5}. x, which only 1 and 2
// hold, is overwritten: it never committed.
func TestLeavingLeaderDeposedUnstallsJoint(t *testing.T) {
	nw, incoming := newLeavingJointNetwork(t)
	nw.drop = func(m Message) bool { return incoming(m.To) != incoming(m.From) }
	for i := 0; i < 3*nw.cfgs[1].ElectionTick && nw.status(1).SoftState.State == StateLeader; i++ {
		nw.tick(1)
	}
	if st := nw.status(1).SoftState.State; st == StateLeader {
		t.Fatalf("check-quorum did not depose the leaving leader cut off from the voters")
	}
	nw.down[3] = false
	nw.drop, nw.rewrite = nil, nil
	nw.tick(100)
	checkLeftJoint(t, nw, incoming, false)
}

// TestRemovedLeaderLeadsUntilReplaced: a leader removed from (or demoted in) a plain
// configuration refuses proposals, keeps heartbeating and replicating, hands leadership to the
// voter with the highest match, tries another voter when that transfer times out, and steps
// down once a voter has taken over. A removed leader never campaigns afterwards; a demoted one
// follows the new leader as a learner.
func TestRemovedLeaderLeadsUntilReplaced(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change ConfChangeType
	}{{"removed", ConfChangeRemoveNode}, {"demoted", ConfChangeAddLearner}} {
		change := tc.change
		t.Run(tc.name, func(t *testing.T) {
			nw := newNetwork(t, 3, withPreVote, withCheckQuorum)
			nw.stabilize()
			nw.campaign(1)
			// 2 falls behind, so 3 has the highest match and is tried first; its
			// MsgTimeoutNow is lost.
			nw.down[2] = true
			nw.propose(1, "a")
			nw.drop = func(m Message) bool { return m.Type == MsgTimeoutNow && m.To == 3 }
			nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{{change, 1}}})
			st := nw.status(1)
			if st.SoftState.State != StateLeader || !slices.Equal(st.ConfState.Voters, []NodeID{2, 3}) {
				t.Fatalf("after applying its removal: %v, conf %+v", st.SoftState.State, st.ConfState)
			}
			if st.LeadTransferee != 3 {
				t.Fatalf("LeadTransferee %d, want 3 (the voter with the highest match)", st.LeadTransferee)
			}
			if _, self := st.Progress[1]; self != (change == ConfChangeAddLearner) {
				t.Fatalf("progress %+v: the leader should appear in it only as a learner", st.Progress)
			}
			err := nw.node(1).Propose([]byte("refused"))
			if !errors.Is(err, ErrLeaderLeaving) || !errors.Is(err, ErrProposalDropped) {
				t.Fatalf("proposal on the leaving leader: %v, want ErrLeaderLeaving (an ErrProposalDropped)", err)
			}
			// A proposal forwarded by a follower is dropped too.
			if err := nw.node(3).Propose([]byte("forwarded")); err != nil {
				t.Fatal(err)
			}
			nw.stabilize()

			// 2 comes back: the leaving leader keeps heartbeating and catches it up.
			nw.down[2] = false
			heartbeats := map[NodeID]int{}
			nw.trace = func(m Message) {
				if m.From == 1 && m.Type == MsgHeartbeat {
					heartbeats[m.To]++
				}
			}
			nw.tick(5)
			if heartbeats[2] == 0 || heartbeats[3] == 0 {
				t.Fatalf("the leaving leader sent heartbeats %v, want some to 2 and 3", heartbeats)
			}
			if got, want := nw.status(2).Applied, nw.status(1).LastIndex; got != want {
				t.Fatalf("node 2 applied %d, want the leader's last index %d", got, want)
			}
			if nw.status(1).SoftState.State != StateLeader {
				t.Fatalf("the leaving leader stopped leading before being replaced\n%s", nw)
			}
			// The transfer to 3 times out; the next attempt goes to 2, which takes over.
			nw.tick(10)
			if l := nw.leader(); l != 2 {
				t.Fatalf("leader %d after the retried hand-over, want 2\n%s", l, nw)
			}
			if st := nw.status(1).SoftState; st.State != StateFollower {
				t.Fatalf("the replaced leader is %v", st.State)
			}
			nw.drop = nil
			nw.propose(2, "b")
			nw.tick(50)
			if st := nw.status(1).SoftState; st.State != StateFollower || nw.leader() != 2 {
				t.Fatalf("after the hand-over: node 1 %v, leader %d\n%s", st.State, nw.leader(), nw)
			}
			want := []string{"a", "b"}
			if change == ConfChangeRemoveNode {
				want = []string{"a"} // nobody sends a removed member anything
			}
			if got := nw.appliedData(1); !slices.Equal(got, want) {
				t.Fatalf("node 1 applied %v, want %v", got, want)
			}
			for _, id := range []NodeID{2, 3} {
				if got := nw.appliedData(id); !slices.Equal(got, []string{"a", "b"}) {
					t.Fatalf("node %d applied %v, want [a b]", id, got)
				}
			}
			nw.checkApplied()
		})
	}
}

// newLeavingNetwork builds voters {1,2,3} led by 1 and removes 1 (or demotes it to learner,
// with change) while 3 is down, with one entry ("x") appended after the change that 2 receives
// only once the change is applied. It returns the network, 1 leading the configuration {2,3},
// and the index of x, which 1 and 2 hold and 3 does not.
func newLeavingNetwork(t *testing.T, change ConfChangeType, opts ...cfgOpt) (*network, uint64) {
	t.Helper()
	nw := newNetwork(t, 3, opts...)
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	removal := nw.status(1).LastIndex + 1
	if err := nw.node(1).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{change, 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := nw.node(1).Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	nw.rewrite = func(m Message) Message {
		if m.Type == MsgApp && nw.status(1).Applied < removal {
			m.Entries = slices.DeleteFunc(slices.Clone(m.Entries), func(e Entry) bool { return e.Index > removal })
		}
		return m
	}
	nw.stabilize()
	nw.rewrite = nil
	nw.stabilize()
	st := nw.status(1)
	if st.SoftState.State != StateLeader || !slices.Equal(st.ConfState.Voters, []NodeID{2, 3}) || st.Applied < removal {
		t.Fatalf("node 1 should lead {2,3}, the change at %d applied: %+v", removal, st)
	}
	if st.HardState.Commit != removal {
		t.Fatalf("commit %d, want %d: entry %d is held by the leaving leader and one voter of {2,3} only", st.HardState.Commit, removal, removal+1)
	}
	if got := nw.status(2).LastIndex; got != removal+1 {
		t.Fatalf("node 2 holds up to %d, want %d", got, removal+1)
	}
	return nw, removal + 1
}

// TestLeavingLeaderCountsOnlyVoters: a leaving leader counts its own log, its own heartbeat
// acknowledgement and its own liveness in no quorum, whether it was removed or demoted to a
// learner (whose progress the leader still tracks). With 3 down, the leader and 2 are not a
// majority of the voters {2,3}: an entry they both hold does not commit, a read is not
// confirmed, and check-quorum deposes the leader.
func TestLeavingLeaderCountsOnlyVoters(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change ConfChangeType
	}{{"removed", ConfChangeRemoveNode}, {"demoted", ConfChangeAddLearner}} {
		t.Run(tc.name+"/commit", func(t *testing.T) {
			nw, x := newLeavingNetwork(t, tc.change)
			if c := nw.status(1).HardState.Commit; c >= x {
				t.Fatalf("entry %d committed (commit %d) on the leaving leader's copy and one voter's of {2,3}", x, c)
			}
			nw.down[3] = false
			nw.tick(1)
			if c := nw.status(1).HardState.Commit; c < x {
				t.Fatalf("entry %d not committed once 3 holds it too (commit %d)\n%s", x, c, nw)
			}
		})
		for _, opt := range []ReadOnlyOption{ReadOnlySafe, ReadOnlyLeaseBased} {
			t.Run(fmt.Sprintf("%s/read index option %d", tc.name, opt), func(t *testing.T) {
				nw, _ := newLeavingNetwork(t, tc.change, withCheckQuorum, func(c *Config) { c.ReadOnlyOption = opt })
				if err := nw.node(1).ReadIndex([]byte("r")); err != nil {
					t.Fatal(err)
				}
				nw.stabilize()
				if rs := nw.readStates[1]; len(rs) != 0 {
					t.Fatalf("read confirmed by the leaving leader and one voter of {2,3}: %+v", rs)
				}
				nw.down[3] = false
				nw.tick(1)
				if rs := nw.readStates[1]; len(rs) != 1 || string(rs[0].RequestCtx) != "r" {
					t.Fatalf("read states %+v once both voters answer", rs)
				}
			})
		}
		t.Run(tc.name+"/check quorum", func(t *testing.T) {
			nw, _ := newLeavingNetwork(t, tc.change, withCheckQuorum)
			for i := 0; i < 2*nw.cfgs[1].ElectionTick && nw.status(1).SoftState.State == StateLeader; i++ {
				nw.tick(1)
			}
			if st := nw.status(1).SoftState.State; st == StateLeader {
				t.Fatalf("the leaving leader still leads, hearing from one voter of {2,3}")
			}
		})
	}
}

// TestLeavingLeaderAnnouncesCommit: the Ready after the leader applies its own removal holds
// heartbeats telling the remaining members the commit index (which DeferCommitBroadcast would
// otherwise hold back): until they learn it, a joint configuration's outgoing half may still
// need the leaving member's vote.
func TestLeavingLeaderAnnouncesCommit(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.DeferCommitBroadcast = true })
	nw.stabilize()
	nw.campaign(1)
	if err := nw.node(1).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeRemoveNode, 1}}}); err != nil {
		t.Fatal(err)
	}
	idx := nw.status(1).LastIndex
	for i := 0; i < 100 && nw.status(1).Applied < idx; i++ {
		for _, id := range []NodeID{1, 2, 3} {
			for nw.nodes[id].HasReady() && nw.status(1).Applied < idx {
				nw.handleReady(id)
			}
		}
		nw.deliver()
	}
	if nw.status(1).Applied < idx {
		t.Fatal("the leader did not apply its removal")
	}
	rd := nw.node(1).Ready()
	told := map[NodeID]bool{}
	for _, m := range rd.Messages {
		if m.Type == MsgHeartbeat && m.Commit >= idx {
			told[m.To] = true
		}
	}
	nw.node(1).Advance(rd)
	if !told[2] || !told[3] {
		t.Fatalf("after applying its removal the leader told %v the commit index %d; want members 2 and 3 (messages %+v)", told, idx, rd.Messages)
	}
	if nw.status(1).SoftState.State != StateLeader {
		t.Fatal("the removed leader stepped down before a voter took over")
	}
}

// TestTimeoutNowWaitsForConfApply: a transferee that learns a configuration change committed
// in the same batch of messages as MsgTimeoutNow campaigns once it has applied the change,
// instead of dropping the request (a node does not campaign with committed configuration
// changes unapplied).
func TestTimeoutNowWaitsForConfApply(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	if err := nw.node(1).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}}); err != nil {
		t.Fatal(err)
	}
	conf := nw.status(1).LastIndex
	nw.handleReady(1) // the append
	nw.deliver()
	nw.handleReady(2) // the acknowledgements
	nw.handleReady(3)
	nw.deliver()
	if c := nw.status(1).HardState.Commit; c < conf {
		t.Fatalf("change at %d not committed (commit %d)", conf, c)
	}
	// The append announcing the commit and MsgTimeoutNow reach 2 before it handles a Ready.
	if err := nw.node(1).TransferLeadership(2); err != nil {
		t.Fatal(err)
	}
	nw.handleReady(1)
	nw.deliver()
	if st := nw.status(2); st.SoftState.State != StateFollower || st.HardState.Commit < conf || st.Applied >= conf {
		t.Fatalf("node 2 should follow with the change committed, unapplied: %+v", st)
	}
	nw.stabilize()
	if l := nw.leader(); l != 2 {
		t.Fatalf("leader %d, want 2 (it campaigns once it applied the change)\n%s", l, nw)
	}
}

// TestCandidateLearningConfChangeGivesUp: a candidate that learns from a refused vote that a
// configuration change committed gives its campaign up instead of counting the rest of its
// votes in the new configuration. Here 4 campaigns not knowing that its own removal committed;
// 1 refuses (its log is longer) and tells it, and 2 and 3 grant: a majority of the new voters
// {1,2,3}, for a member that is not one of them.
func TestCandidateLearningConfChangeGivesUp(t *testing.T) {
	nw := newNetwork(t, 4)
	nw.stabilize()
	nw.campaign(1)
	removal := nw.status(1).LastIndex + 1
	if err := nw.node(1).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeRemoveNode, 4}}}); err != nil {
		t.Fatal(err)
	}
	if err := nw.node(1).Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Only 1 holds x; 4 never hears that the removal committed.
	nw.drop = func(m Message) bool {
		return m.To == 4 && (m.Type == MsgApp || m.Type == MsgHeartbeat) && m.Commit >= removal
	}
	nw.rewrite = func(m Message) Message {
		if m.Type == MsgApp {
			m.Entries = slices.DeleteFunc(slices.Clone(m.Entries), func(e Entry) bool { return e.Index > removal })
		}
		return m
	}
	nw.stabilize()
	if st := nw.status(4); st.LastIndex != removal || st.HardState.Commit >= removal {
		t.Fatalf("node 4 should hold its removal, uncommitted: %+v", st)
	}
	for _, id := range []NodeID{2, 3} {
		if st := nw.status(id); st.Applied < removal || st.LastIndex != removal {
			t.Fatalf("node %d should have applied the removal and hold nothing after it: %+v", id, st)
		}
	}
	nw.drop, nw.rewrite = nil, nil
	if err := nw.node(4).Campaign(); err != nil {
		t.Fatal(err)
	}
	nw.handleReady(4) // the vote requests
	nw.deliver()
	nw.handleReady(1) // 1 refuses first
	nw.deliver()
	if st := nw.status(4); st.HardState.Commit < removal {
		t.Fatalf("node 4 did not learn the commit index from the refused vote: %+v", st)
	}
	nw.handleReady(4) // 4 applies its removal
	nw.handleReady(2)
	nw.handleReady(3)
	nw.deliver() // the grants of 2 and 3
	if st := nw.status(4); st.SoftState.State != StateFollower {
		t.Fatalf("node 4 is %v after learning of its removal mid-campaign", st.SoftState.State)
	}
	nw.tick(50)
	if l := nw.leader(); l == None || l == 4 {
		t.Fatalf("leader %d, want one of {1,2,3}\n%s", l, nw)
	}
	nw.checkApplied()
}
