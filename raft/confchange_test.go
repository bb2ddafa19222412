package raft

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
)

func TestConfChangeCodecRoundTrip(t *testing.T) {
	for _, cc := range []ConfChange{
		{},
		{Changes: []ConfChangeSingle{{ConfChangeAddVoter, 1}}},
		{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 1 << 40}, {ConfChangeRemoveNode, 3}}, Joint: true, AutoLeave: true, Context: []byte("10.0.0.1:7000")},
	} {
		b := EncodeConfChange(cc)
		got, err := DecodeConfChange(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", cc, err)
		}
		if !reflect.DeepEqual(got, cc) {
			t.Fatalf("round trip %+v -> %+v", cc, got)
		}
		if !bytes.Equal(EncodeConfChange(got), b) {
			t.Fatal("re-encoding differs")
		}
	}
}

func TestConfChangeCodecRejectsCorruption(t *testing.T) {
	good := EncodeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddVoter, 300}}, Context: []byte("ctx")})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"version":      append([]byte{9}, good[1:]...),
		"flags":        append([]byte{good[0], 0x80}, good[2:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(slices.Clone(good), 0),
		"bad type":     {confChangeVersion, 0, 1, 7, 1, 0},
		"huge count":   {confChangeVersion, 0, 0xff, 0xff, 0x03},
		"huge context": {confChangeVersion, 0, 0, 0xff, 0xff, 0xff, 0x7f},
	} {
		if _, err := DecodeConfChange(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// Every initial member writes the identical bootstrap entry regardless of the order of
// InitialVoters, so their logs match at index 1.
func TestBootstrapDeterministic(t *testing.T) {
	var first []Entry
	for i, voters := range [][]NodeID{{1, 2, 3}, {3, 1, 2}, {2, 3, 1}} {
		cfg := testConfig(NodeID(i + 1))
		cfg.InitialVoters = voters
		cfg.InitialContext = []byte("members")
		n, err := New(cfg, PersistentState{})
		if err != nil {
			t.Fatal(err)
		}
		rd := n.Ready()
		if rd.HardState != (HardState{Term: 1, Commit: 1}) || len(rd.Entries) != 1 || !rd.MustSync {
			t.Fatalf("bootstrap Ready %+v", rd)
		}
		if i == 0 {
			first = rd.Entries
		} else if !reflect.DeepEqual(rd.Entries, first) {
			t.Fatalf("bootstrap entries differ: %+v vs %+v", rd.Entries, first)
		}
		if !slices.Equal(n.Status().ConfState.Voters, []NodeID{1, 2, 3}) {
			t.Fatalf("bootstrap config %+v", n.Status().ConfState)
		}
		n.Advance(rd)
	}
	cc, err := DecodeConfChange(first[0].Data)
	if err != nil || len(cc.Changes) != 3 || string(cc.Context) != "members" || first[0].Index != 1 || first[0].Term != 1 || first[0].Type != EntryConfChange {
		t.Fatalf("bootstrap entry %+v decodes to %+v, %v", first[0], cc, err)
	}
	for _, bad := range [][]NodeID{{1, 1, 2}, {0, 1}, {2, 3}} {
		cfg := testConfig(1)
		cfg.InitialVoters = bad
		if _, err := New(cfg, PersistentState{}); err == nil {
			t.Errorf("InitialVoters %v accepted", bad)
		}
	}
	cfg := testConfig(1)
	cfg.InitialVoters = []NodeID{1}
	cfg.InitialContext = make([]byte, MaxConfChangeContextBytes+1)
	if _, err := New(cfg, PersistentState{}); err == nil {
		t.Error("InitialContext beyond MaxConfChangeContextBytes accepted")
	}
}

func (nw *network) proposeConf(id NodeID, cc ConfChange) {
	nw.t.Helper()
	if err := nw.node(id).ProposeConfChange(cc); err != nil {
		nw.t.Fatalf("propose conf change %+v on %d: %v", cc, id, err)
	}
	nw.stabilize()
}

func addNode(nw *network, id NodeID, opts ...cfgOpt) {
	nw.add(testConfig(id, opts...))
}

// Dissertation §4.2.1: a learner receives the log but never votes nor counts toward a quorum; it is
// then promoted to a voter with a single change.
func TestLearnerThenPromotion(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.propose(1, "before")
	addNode(nw, 4)
	nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}})
	nw.tick(3)
	if got := nw.appliedData(4); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("learner applied %v", got)
	}
	if cs := nw.status(1).ConfState; !slices.Equal(cs.Learners, []NodeID{4}) || !slices.Equal(cs.Voters, []NodeID{1, 2, 3}) {
		t.Fatalf("conf %+v", cs)
	}
	if pr := nw.status(1).Progress[4]; !pr.Learner || pr.Match != nw.status(1).LastIndex {
		t.Fatalf("learner progress %+v", pr)
	}
	// The learner does not count: with 2 and 3 down nothing commits even though 4 has it.
	nw.down[2], nw.down[3] = true, true
	commit := nw.status(1).HardState.Commit
	nw.propose(1, "needs-quorum")
	if c := nw.status(1).HardState.Commit; c != commit {
		t.Fatalf("committed %d with only the learner", c)
	}
	// The learner never campaigns.
	if err := nw.node(4).Campaign(); err == nil {
		t.Fatal("learner campaigned")
	}
	nw.down[2], nw.down[3] = false, false
	nw.tick(2)
	nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddVoter, 4}}})
	for _, id := range nw.ids {
		if cs := nw.status(id).ConfState; !slices.Equal(cs.Voters, []NodeID{1, 2, 3, 4}) || len(cs.Learners) != 0 {
			t.Fatalf("node %d conf after promotion %+v", id, cs)
		}
	}
	// Now 4 counts: with 2 and 3 down, 1+4 is not a majority of 4, but 1+2+4 is.
	nw.down[3] = true
	nw.propose(1, "with-4")
	if got := nw.appliedData(4); !slices.Equal(got, []string{"before", "needs-quorum", "with-4"}) {
		t.Fatalf("node 4 applied %v", got)
	}
	nw.checkApplied()
}

// Dissertation §4.3: several changes at once go through a joint configuration in which decisions
// need majorities of both the old and the new voters; AutoLeave leaves it by itself.
func TestJointConsensusAutoLeave(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	addNode(nw, 4)
	addNode(nw, 5)
	var sawJoint bool
	nw.trace = func(m Message) {
		if nw.status(1).ConfState.VotersOutgoing != nil {
			sawJoint = true
		}
	}
	nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{
		{ConfChangeAddVoter, 4}, {ConfChangeAddVoter, 5}, {ConfChangeRemoveNode, 3}}, AutoLeave: true})
	nw.tick(3)
	if !sawJoint {
		t.Fatal("never in a joint configuration")
	}
	for _, id := range []NodeID{1, 2, 4, 5} {
		cs := nw.status(id).ConfState
		if !slices.Equal(cs.Voters, []NodeID{1, 2, 4, 5}) || len(cs.VotersOutgoing) != 0 || cs.AutoLeave {
			t.Fatalf("node %d conf %+v", id, cs)
		}
	}
	nw.propose(1, "new-config")
	if got := nw.appliedData(5); !slices.Equal(got, []string{"new-config"}) {
		t.Fatalf("node 5 applied %v", got)
	}
}

// Dissertation §4.3: in the joint configuration an entry needs a majority of C_old and of C_new.
func TestJointQuorumNeedsBothMajorities(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	for _, id := range []NodeID{4, 5, 6} {
		addNode(nw, id)
	}
	// Manual leave (no AutoLeave): stay joint between {1,2,3} and {1,4,5,6}.
	nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{
		{ConfChangeRemoveNode, 2}, {ConfChangeRemoveNode, 3}, {ConfChangeAddVoter, 4}, {ConfChangeAddVoter, 5}, {ConfChangeAddVoter, 6}}})
	nw.tick(2)
	cs := nw.status(1).ConfState
	if !slices.Equal(cs.VotersOutgoing, []NodeID{1, 2, 3}) || !slices.Equal(cs.Voters, []NodeID{1, 4, 5, 6}) {
		t.Fatalf("conf %+v", cs)
	}
	// Old majority down: the new majority alone cannot commit.
	nw.down[2], nw.down[3] = true, true
	commit := nw.status(1).HardState.Commit
	nw.propose(1, "x")
	if nw.status(1).HardState.Commit != commit {
		t.Fatal("committed without a majority of the outgoing configuration")
	}
	nw.down[3] = false
	nw.tick(2)
	if nw.status(1).HardState.Commit == commit {
		t.Fatal("not committed with majorities of both")
	}
	// A non-empty change is refused while joint; the empty change leaves.
	if err := nw.node(1).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddVoter, 2}}}); err == nil {
		t.Fatal("change accepted while joint")
	}
	nw.proposeConf(1, ConfChange{})
	if cs := nw.status(1).ConfState; len(cs.VotersOutgoing) != 0 || !slices.Equal(cs.Voters, []NodeID{1, 4, 5, 6}) {
		t.Fatalf("after leaving: %+v", cs)
	}
}

// One configuration change at a time (dissertation §4.1): a second is refused until the first is
// applied; and none before the new leader's first entry is applied (the §4.1.1 fix).
func TestConfChangePending(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	n1 := nw.node(1)
	if err := n1.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}}); err != nil {
		t.Fatal(err)
	}
	err := n1.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 5}}})
	if !errors.Is(err, ErrConfChangePending) || !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("second change: %v", err)
	}
	nw.stabilize()
	if err := n1.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 5}}}); err != nil {
		t.Fatalf("change after the first applied: %v", err)
	}
	nw.stabilize()
	// A new leader refuses changes until its no-op is applied.
	nw.drop = func(m Message) bool { return m.Type == MsgApp }
	nw.campaign(2)
	if nw.leader() != 2 {
		t.Fatalf("leader %d", nw.leader())
	}
	err = nw.node(2).ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{ConfChangeRemoveNode, 5}}})
	if !errors.Is(err, ErrConfChangePending) {
		t.Fatalf("change before the leader's first commit: %v", err)
	}
}

// A configuration change proposed on a follower is forwarded and applied everywhere; its Context is
// handed back in the applied entry.
func TestConfChangeForwardedWithContext(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	addNode(nw, 4)
	nw.proposeConf(2, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}, Context: []byte("addr-4")})
	var found bool
	for _, e := range nw.applied[3] {
		if e.Type == EntryConfChange && e.Index > 1 {
			cc, err := DecodeConfChange(e.Data)
			if err != nil || string(cc.Context) != "addr-4" {
				t.Fatalf("applied conf entry %+v: %+v %v", e, cc, err)
			}
			found = true
		}
	}
	if !found || !slices.Equal(nw.status(3).ConfState.Learners, []NodeID{4}) {
		t.Fatalf("forwarded change not applied: %+v", nw.status(3).ConfState)
	}
}

func TestApplyConfChangeValidation(t *testing.T) {
	base := membership{voters: []NodeID{1, 2, 3}}
	for name, cc := range map[string]ConfChange{
		"leave when not joint": {},
		"remove all":           {Changes: []ConfChangeSingle{{ConfChangeRemoveNode, 1}, {ConfChangeRemoveNode, 2}, {ConfChangeRemoveNode, 3}}},
		"node 0":               {Changes: []ConfChangeSingle{{ConfChangeAddVoter, 0}}},
		"unknown type":         {Changes: []ConfChangeSingle{{ConfChangeType(9), 4}}},
	} {
		if _, err := applyConfChange(base, cc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Demoting an outgoing voter makes it a learner only when the joint config is left.
	j, err := applyConfChange(base, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 3}}, Joint: true})
	if err != nil || !slices.Equal(j.learnersNext, []NodeID{3}) || len(j.learners) != 0 || !j.isVoter(3) {
		t.Fatalf("joint demotion: %+v %v", j, err)
	}
	l, err := applyConfChange(j, ConfChange{})
	if err != nil || !slices.Equal(l.learners, []NodeID{3}) || l.isVoter(3) || l.joint() {
		t.Fatalf("after leaving: %+v %v", l, err)
	}
}
