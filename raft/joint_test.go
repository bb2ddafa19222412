package raft

import (
	"fmt"
	"slices"
	"testing"
)

// Joint consensus (dissertation 4.3): while a configuration is joint, an election and a ReadIndex
// confirmation need a majority of the outgoing voters AND a majority of the incoming ones. These
// tests hold a joint configuration whose halves have different members, take one half away (down,
// or voting no), and check that the other half alone decides nothing and both together do. Each
// runs with the matching planted bug too, to show it would catch counting one half only.

// Voters of the joint configuration newJointNetwork builds: 1 is in both halves, 2 and 3 only in
// the outgoing one, 4 and 5 only in the incoming one.
var (
	jointOutgoingOnly = []NodeID{2, 3}
	jointIncomingOnly = []NodeID{4, 5}
)

// newJointNetwork builds voters {1,2,3} led by 1, then moves, in one change and without leaving
// automatically, to {1,4,5}: the cluster stays in the joint configuration incoming {1,4,5},
// outgoing {1,2,3} until told otherwise.
func newJointNetwork(t *testing.T, opts ...cfgOpt) *network {
	t.Helper()
	nw := newNetwork(t, 3, opts...)
	for _, id := range jointIncomingOnly {
		nw.add(testConfig(id, opts...))
	}
	nw.stabilize()
	nw.campaign(1)
	cc := ConfChange{Changes: []ConfChangeSingle{
		{ConfChangeAddVoter, 4}, {ConfChangeAddVoter, 5}, {ConfChangeRemoveNode, 2}, {ConfChangeRemoveNode, 3},
	}}
	if err := nw.node(1).ProposeConfChange(cc); err != nil {
		t.Fatalf("propose joint change: %v", err)
	}
	nw.stabilize()
	nw.tick(2) // heartbeats carry the commit index to everyone
	for _, id := range nw.ids {
		cs := nw.status(id).ConfState
		if !slices.Equal(cs.Voters, []NodeID{1, 4, 5}) || !slices.Equal(cs.VotersOutgoing, []NodeID{1, 2, 3}) || cs.AutoLeave {
			t.Fatalf("node %d did not enter the joint configuration: %+v\n%s", id, cs, nw)
		}
	}
	if nw.leader() != 1 {
		t.Fatalf("leader changed while entering the joint configuration\n%s", nw)
	}
	return nw
}

func setDown(nw *network, ids []NodeID, down bool) {
	for _, id := range ids {
		nw.down[id] = down
	}
}

// A candidate with only one half's majority stays a candidate; with both it wins.
func TestJointElectionNeedsBothHalves(t *testing.T) {
	for _, tc := range []struct {
		name      string
		missing   []NodeID // the members of one half only, taken down
		candidate NodeID   // a member of the other half
		bugCaught bool     // whether counting only the incoming half would win here
	}{
		{"outgoing half down", jointOutgoingOnly, 4, true},
		{"incoming half down", jointIncomingOnly, 2, false},
	} {
		for _, bug := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/bug=%v", tc.name, bug), func(t *testing.T) {
				nw := newJointNetwork(t, func(c *Config) { c.Bugs.VoteCountsIncomingOnly = bug })
				nw.down[1] = true // the only member of both halves: each half now lacks a majority
				setDown(nw, tc.missing, true)
				nw.campaign(tc.candidate)
				st := nw.status(tc.candidate).SoftState.State
				if wantLeader := bug && tc.bugCaught; (st == StateLeader) != wantLeader {
					t.Fatalf("node %d is %v with one half's votes (want leader: %v)\n%s", tc.candidate, st, wantLeader, nw)
				}
				if st == StateLeader {
					return // the planted bug won with one half: shown, nothing more to check
				}
				setDown(nw, tc.missing, false)
				nw.campaign(tc.candidate)
				if st := nw.status(tc.candidate).SoftState.State; st != StateLeader {
					t.Fatalf("node %d is %v with majorities of both halves\n%s", tc.candidate, st, nw)
				}
			})
		}
	}
}

// The outgoing-only voters are up but vote no (their logs are longer): the incoming half's grants
// alone must lose the election.
func TestJointElectionLostOnOneHalfsRejections(t *testing.T) {
	for _, bug := range []bool{false, true} {
		t.Run(fmt.Sprintf("bug=%v", bug), func(t *testing.T) {
			nw := newJointNetwork(t, func(c *Config) { c.Bugs.VoteCountsIncomingOnly = bug })
			// An entry reaches the outgoing half only: it cannot commit (the incoming half lacks
			// it), but it makes 1, 2 and 3 refuse to vote for 4 (paper 5.4.1).
			setDown(nw, jointIncomingOnly, true)
			nw.propose(1, "outgoing only")
			setDown(nw, jointIncomingOnly, false)
			nw.down[1] = true
			nw.campaign(4)
			st := nw.status(4).SoftState.State
			if (st == StateLeader) != bug {
				t.Fatalf("bug=%v: node 4 is %v after 5 granted and 2, 3 refused\n%s", bug, st, nw)
			}
			if bug {
				return
			}
			if st != StateFollower {
				t.Fatalf("node 4 is %v after the outgoing majority refused: the election is lost, not pending", st)
			}
			if nw.status(2).HardState.Commit >= nw.status(2).LastIndex {
				t.Fatalf("the entry held by the outgoing half only was committed\n%s", nw)
			}
		})
	}
}

// A ReadIndex round acknowledged by only one half's majority stays unanswered; once a majority of
// both halves acknowledges, it is answered.
func TestJointReadIndexNeedsBothHalves(t *testing.T) {
	for _, tc := range []struct {
		name      string
		missing   []NodeID
		bugCaught bool
	}{
		{"outgoing half down", jointOutgoingOnly, true},
		{"incoming half down", jointIncomingOnly, false},
	} {
		for _, bug := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/bug=%v", tc.name, bug), func(t *testing.T) {
				nw := newJointNetwork(t, func(c *Config) { c.Bugs.ReadIndexCountsIncomingOnly = bug })
				setDown(nw, tc.missing, true)
				if err := nw.node(1).ReadIndex([]byte("r")); err != nil {
					t.Fatal(err)
				}
				nw.stabilize()
				nw.tick(3) // heartbeats retry the round; still only one half answers
				got := len(nw.readStates[1])
				if want := bug && tc.bugCaught; (got == 1) != want {
					t.Fatalf("%d read states with one half's acknowledgements (want answered: %v)", got, want)
				}
				if got == 1 {
					return
				}
				nw.down[tc.missing[0]] = false // now 2 of 3 in each half
				nw.tick(1)
				if rs := nw.readStates[1]; len(rs) != 1 || string(rs[0].RequestCtx) != "r" {
					t.Fatalf("read states %+v with majorities of both halves", rs)
				}
			})
		}
	}
}
