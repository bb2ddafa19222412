package raft

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// confEntry is the bootstrap entry of a cluster of voters 1..n.
func confEntry(n int) Entry {
	cc := ConfChange{}
	for i := 1; i <= n; i++ {
		cc.Changes = append(cc.Changes, ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: NodeID(i)})
	}
	return Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: EncodeConfChange(cc)}
}

// newNetworkFromLogs restarts nodes 1..len(terms) of one cluster, each with a log whose entry i+2
// has term terms[id-1][i] after the bootstrap entry (index 1, term 1). Only the bootstrap entry
// is committed.
func newNetworkFromLogs(t *testing.T, terms [][]uint64, opts ...cfgOpt) *network {
	nw := newNetwork(t, 0, opts...)
	var maxTerm uint64 = 1
	for _, ts := range terms {
		for _, tm := range ts {
			maxTerm = max(maxTerm, tm)
		}
	}
	for i, ts := range terms {
		id := NodeID(i + 1)
		ents := []Entry{confEntry(len(terms))}
		for j, tm := range ts {
			ents = append(ents, Entry{Index: uint64(j + 2), Term: tm, Data: []byte(fmt.Sprintf("t%d-i%d", tm, j+2))})
		}
		st := &memStorage{hs: HardState{Term: maxTerm, Commit: 1}, ents: ents}
		cfg := testConfig(id, opts...)
		n, err := New(cfg, st.state())
		if err != nil {
			t.Fatal(err)
		}
		nw.ids = append(nw.ids, id)
		nw.cfgs[id], nw.nodes[id], nw.storage[id] = cfg, n, st
	}
	nw.stabilize()
	return nw
}

func logTerms(nw *network, id NodeID) []uint64 {
	var out []uint64
	for _, e := range nw.storage[id].ents {
		out = append(out, e.Term)
	}
	return out
}

// Paper §5.3, Figure 7: whatever the follower's log (missing entries, extra uncommitted entries,
// both), the leader forces it to duplicate its own. With the conflict-term hint, each follower is
// repaired in at most a few rejections rather than one per entry.
func TestFigure7LogRepair(t *testing.T) {
	leader := []uint64{1, 1, 4, 4, 5, 5, 6, 6, 6} // indexes 2..10 (index 1 is the bootstrap entry)
	followers := map[string][]uint64{
		"a": {1, 1, 4, 4, 5, 5, 6, 6},
		"b": {1, 1, 4},
		"c": {1, 1, 4, 4, 5, 5, 6, 6, 6, 6},
		"d": {1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7},
		"e": {1, 1, 4, 4, 4, 4},
		"f": {1, 1, 2, 2, 2, 3, 3, 3, 3, 3},
	}
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		t.Run(name, func(t *testing.T) {
			// Node 3 holds the leader's log so that node 1 can win even against d.
			nw := newNetworkFromLogs(t, [][]uint64{leader, followers[name], leader})
			rejections := 0
			nw.trace = func(m Message) {
				if m.Type == MsgAppResp && m.Reject && m.From == 2 {
					rejections++
				}
			}
			nw.campaign(1)
			if nw.leader() != 1 {
				t.Fatalf("node 1 not elected\n%s", nw)
			}
			want := append(append([]uint64{1}, leader...), nw.status(1).HardState.Term)
			for _, id := range nw.ids {
				if got := logTerms(nw, id); !slices.Equal(got, want) {
					t.Fatalf("node %d log terms %v, want %v", id, got, want)
				}
			}
			if rejections > 2 {
				t.Fatalf("%d rejections to repair follower %s; fast backtracking should need at most 2", rejections, name)
			}
			nw.checkApplied()
		})
	}
}

// Paper §5.4.2, Figure 8: a leader never commits an entry of an earlier term by counting replicas,
// only once an entry of its own term is replicated on a majority.
func TestCommitOnlyCurrentTermByCounting(t *testing.T) {
	for _, bug := range []bool{false, true} {
		t.Run(fmt.Sprintf("bug=%v", bug), func(t *testing.T) {
			nw := newNetworkFromLogs(t, [][]uint64{{2}, {2}, {2}}, func(c *Config) { c.Bugs.CommitOldTermByCounting = bug })
			// Elect node 1 but keep every append from reaching the followers.
			nw.drop = func(m Message) bool { return m.Type == MsgApp }
			nw.campaign(1)
			n1 := nw.node(1)
			term := nw.status(1).HardState.Term
			if nw.status(1).LastIndex != 3 {
				t.Fatalf("leader log %d, want the no-op at 3", nw.status(1).LastIndex)
			}
			step := func(from NodeID, index uint64) {
				if err := n1.Step(Message{Type: MsgAppResp, From: from, To: 1, Term: term, Index: index}); err != nil {
					t.Fatal(err)
				}
				nw.stabilize()
			}
			step(2, 2) // a majority (1, 2) now holds index 2, of term 2
			got := nw.status(1).HardState.Commit
			if bug && got != 2 {
				t.Fatalf("with the planted bug, commit %d, want 2", got)
			}
			if !bug && got != 1 {
				t.Fatalf("old-term entry committed by counting: commit %d", got)
			}
			step(2, 3) // the no-op of the current term reaches a majority
			if got := nw.status(1).HardState.Commit; got != 3 {
				t.Fatalf("commit %d after the current-term entry reached a majority, want 3", got)
			}
		})
	}
}

// Paper §5.4 (Leader Completeness): a node missing a committed entry cannot become leader, since a
// majority holding it refuses to vote for it.
func TestLeaderCompleteness(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	nw.propose(1, "committed")
	if got := nw.appliedData(2); !slices.Equal(got, []string{"committed"}) {
		t.Fatalf("node 2 applied %v", got)
	}
	nw.down[3] = false
	nw.down[1] = true
	// Node 3 lacks the entry: 2 refuses it; node 3 cannot win.
	nw.campaign(3)
	if nw.status(3).SoftState.State == StateLeader {
		t.Fatal("node missing a committed entry was elected")
	}
	nw.campaign(2)
	if nw.leader() != 2 {
		t.Fatalf("node 2 not elected\n%s", nw)
	}
	if got := nw.appliedData(3); !slices.Equal(got, []string{"committed"}) {
		t.Fatalf("node 3 applied %v after the new leader took over", got)
	}
	nw.checkApplied()
}

// Dissertation §10.2.1: the leader writes its log in parallel with replication; its own match
// advances only when the caller reports the write done (Advance).
func TestLeaderOwnMatchAdvancesOnAdvance(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	n1 := nw.node(1)
	if err := n1.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	last := n1.Status().LastIndex
	rd := n1.Ready()
	if len(msgsOf([]Ready{rd}, MsgApp, false)) != 2 || len(rd.Entries) != 1 {
		t.Fatalf("Ready: %d appends, %d entries; want the appends sent with the entry still to persist", len(msgsOf([]Ready{rd}, MsgApp, false)), len(rd.Entries))
	}
	if m := n1.Status().Progress[1].Match; m >= last {
		t.Fatalf("leader's own match %d before persisting %d", m, last)
	}
	n1.Advance(rd)
	if m := n1.Status().Progress[1].Match; m != last {
		t.Fatalf("leader's own match %d after persisting, want %d", m, last)
	}
	// A single-voter cluster therefore commits only after its own write.
	s := newSingle(t, 1, []NodeID{1})
	if err := s.Campaign(); err != nil {
		t.Fatal(err)
	}
	drain(s)
	if err := s.Propose([]byte("y")); err != nil {
		t.Fatal(err)
	}
	rd = s.Ready()
	if len(rd.CommittedEntries) != 0 {
		t.Fatalf("single voter committed before persisting: %+v", rd.CommittedEntries)
	}
	s.Advance(rd)
	rd = s.Ready()
	if len(rd.CommittedEntries) != 1 || string(rd.CommittedEntries[0].Data) != "y" {
		t.Fatalf("after persisting, CommittedEntries %+v", rd.CommittedEntries)
	}
	s.Advance(rd)
}

// Proposals made between two Readys travel in one append per follower, up to MaxMsgBytes.
func TestProposalBatching(t *testing.T) {
	for _, tc := range []struct {
		maxMsg   uint64
		wantMsgs int
	}{{1 << 20, 1}, {3 * (10 + entryHeaderBytes), 4}} {
		nw := newNetwork(t, 3, func(c *Config) { c.MaxMsgBytes = tc.maxMsg })
		nw.stabilize()
		nw.campaign(1)
		n1 := nw.node(1)
		for i := range 10 {
			if err := n1.Propose(fmt.Appendf(nil, "entry-%04d", i)); err != nil {
				t.Fatal(err)
			}
		}
		rd := n1.Ready()
		var toTwo []Message
		for _, m := range rd.Messages {
			if m.Type == MsgApp && m.To == 2 {
				toTwo = append(toTwo, m)
			}
		}
		n1.Advance(rd)
		total := 0
		for _, m := range toTwo {
			total += len(m.Entries)
		}
		if total != 10 || len(toTwo) != tc.wantMsgs {
			t.Fatalf("MaxMsgBytes %d: %d entries in %d appends, want 10 in %d", tc.maxMsg, total, len(toTwo), tc.wantMsgs)
		}
	}
}

// Flow control: in replicate state at most MaxInflightMsgs appends (and MaxInflightBytes) are
// outstanding; acknowledgements reopen the window.
func TestInflightLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  cfgOpt
		want int
	}{
		{"msgs", func(c *Config) { c.MaxInflightMsgs = 3 }, 3},
		{"bytes", func(c *Config) {
			c.MaxMsgBytes = 100 + entryHeaderBytes
			c.MaxInflightBytes = 2 * (100 + entryHeaderBytes)
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := newNetwork(t, 2, tc.opt)
			nw.stabilize()
			nw.campaign(1)
			if st := nw.status(1).Progress[2].State; st != ProgressReplicate {
				t.Fatalf("follower state %v", st)
			}
			held := []Message{}
			nw.drop = func(m Message) bool {
				if m.Type == MsgAppResp && m.From == 2 {
					held = append(held, m)
					return true
				}
				return false
			}
			appends := 0
			nw.trace = func(m Message) {
				if m.Type == MsgApp && m.To == 2 {
					appends++
				}
			}
			for i := range 10 {
				if err := nw.node(1).Propose(make([]byte, 100)); err != nil {
					t.Fatalf("proposal %d: %v", i, err)
				}
				nw.stabilize()
			}
			if appends != tc.want || nw.status(1).Progress[2].Inflight != tc.want {
				t.Fatalf("%d appends sent, %d inflight; want %d", appends, nw.status(1).Progress[2].Inflight, tc.want)
			}
			nw.drop = nil
			nw.inflight = append(nw.inflight, held...)
			nw.stabilize()
			if st := nw.status(1); st.Progress[2].Match != st.LastIndex || st.HardState.Commit != st.LastIndex {
				t.Fatalf("not caught up after acknowledgements: %+v", st.Progress[2])
			}
		})
	}
}

// MaxUncommittedEntriesBytes: proposals beyond the budget fail with ErrTooManyUncommitted (which is
// an ErrProposalDropped) until entries commit.
func TestUncommittedLimit(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxUncommittedEntriesBytes = 250 })
	nw.stabilize()
	nw.campaign(1)
	nw.down[2], nw.down[3] = true, true
	n1 := nw.node(1)
	for i := range 2 {
		if err := n1.Propose(make([]byte, 100)); err != nil {
			t.Fatalf("proposal %d within budget: %v", i, err)
		}
	}
	err := n1.Propose(make([]byte, 100))
	if !errors.Is(err, ErrTooManyUncommitted) || !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("proposal beyond budget: %v", err)
	}
	nw.stabilize()
	nw.down[2], nw.down[3] = false, false
	nw.tick(3)
	if err := n1.Propose(make([]byte, 100)); err != nil {
		t.Fatalf("proposal after commit freed the budget: %v", err)
	}
}

// A follower forwards proposals to the leader; with forwarding disabled or no leader it returns
// *NotLeaderError naming the leader it knows.
func TestProposalForwarding(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.propose(3, "via-follower")
	for _, id := range nw.ids {
		if got := nw.appliedData(id); !slices.Equal(got, []string{"via-follower"}) {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
	nw2 := newNetwork(t, 3, func(c *Config) { c.DisableProposalForwarding = true })
	nw2.stabilize()
	nw2.campaign(1)
	var nle *NotLeaderError
	err := nw2.node(2).Propose([]byte("x"))
	if !errors.As(err, &nle) || nle.Leader != 1 || nle.Term != nw2.status(1).HardState.Term {
		t.Fatalf("proposal with forwarding disabled: %v", err)
	}
}

// ReportUnreachable moves a replicating follower back to probe.
func TestReportUnreachable(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	if st := nw.status(1).Progress[2].State; st != ProgressReplicate {
		t.Fatalf("state %v", st)
	}
	nw.node(1).ReportUnreachable(2)
	if st := nw.status(1).Progress[2]; st.State != ProgressProbe || st.Next != st.Match+1 {
		t.Fatalf("after ReportUnreachable: %+v", st)
	}
	nw.propose(1, "x")
	if st := nw.status(1).Progress[2]; st.State != ProgressReplicate || st.Match != nw.status(1).LastIndex {
		t.Fatalf("not back to replicate: %+v", st)
	}
}

// Restart: a node rebuilt from what it persisted has the same log, term and vote, re-applies
// committed entries after Config.Applied, and rejoins.
func TestRestartFromPersistentState(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	nw.propose(1, "a")
	nw.propose(1, "b")
	before := nw.status(2)
	nw.restart(2)
	after := nw.status(2)
	if after.HardState != before.HardState || after.LastIndex != before.LastIndex || after.Applied != 0 {
		t.Fatalf("restart: before %+v after %+v", before, after)
	}
	nw.stabilize()
	// Configuration takes effect when applied: re-applying the bootstrap entry restores it.
	if got := nw.status(2).ConfState.Voters; !slices.Equal(got, []NodeID{1, 2, 3}) {
		t.Fatalf("voters after re-applying: %v", got)
	}
	if got := nw.appliedData(2); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("re-applied %v", got)
	}
	nw.propose(1, "c")
	if got := nw.appliedData(2); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after restart applied %v", got)
	}
	nw.checkApplied()
}

func TestNewRejectsInconsistentState(t *testing.T) {
	cfg := testConfig(1)
	for name, st := range map[string]PersistentState{
		"gap":            {HardState: HardState{Term: 1}, Entries: []Entry{{Index: 1, Term: 1}, {Index: 3, Term: 1}}},
		"commit>last":    {HardState: HardState{Term: 1, Commit: 5}, Entries: []Entry{{Index: 1, Term: 1}}},
		"term<lastTerm":  {HardState: HardState{Term: 1}, Entries: []Entry{{Index: 1, Term: 2}}},
		"decreasingTerm": {HardState: HardState{Term: 3}, Entries: []Entry{{Index: 1, Term: 3}, {Index: 2, Term: 2}}},
	} {
		if _, err := New(cfg, st); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := cfg
	bad.ElectionTick = 1
	if _, err := New(bad, PersistentState{}); err == nil {
		t.Error("invalid config accepted")
	}
}

// Configuration takes effect when applied: a node restarted with Config.Applied re-applies the
// configuration entries up to it at once, and refuses to campaign while committed configuration
// entries after it are unapplied (it may not even be a voter in the configuration it is about to
// adopt).
func TestRestartReplaysConfigUpToApplied(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	addNode(nw, 4)
	nw.proposeConf(1, ConfChange{Changes: []ConfChangeSingle{{ConfChangeAddLearner, 4}}})
	st := nw.status(2)
	cfg := nw.cfgs[2]
	cfg.Applied = st.Applied
	n, err := New(cfg, nw.storage[2].state())
	if err != nil {
		t.Fatal(err)
	}
	if cs := n.Status().ConfState; !slices.Equal(cs.Learners, []NodeID{4}) || !slices.Equal(cs.Voters, []NodeID{1, 2, 3}) {
		t.Fatalf("config after restart with Applied=%d: %+v", cfg.Applied, cs)
	}
	cfg.Applied = 0
	n, err = New(cfg, nw.storage[2].state())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Campaign(); err == nil {
		t.Fatal("campaigned with committed configuration entries unapplied")
	}
	drain(n)
	if cs := n.Status().ConfState; !slices.Equal(cs.Learners, []NodeID{4}) {
		t.Fatalf("config after re-applying: %+v", cs)
	}
	if err := n.Campaign(); err != nil {
		t.Fatalf("campaign after applying: %v", err)
	}
}

// Paper §5.4.2, Figure 8, played out on five nodes. Index 1 is the bootstrap entry and each new
// leader appends a no-op, so indexes are shifted from the figure, but the sequence is the same:
// an entry of an old term stored on a majority can still be overwritten, so the leader must not
// count it committed (d); once an entry of the leader's own term is on a majority, it is (e).
func TestFigure8(t *testing.T) {
	for _, replicateOwnTerm := range []bool{false, true} {
		t.Run(fmt.Sprintf("ownTermReplicated=%v", replicateOwnTerm), func(t *testing.T) {
			// One entry per append, so that the old-term entry can travel without the new one.
			nw := newNetwork(t, 5, func(c *Config) { c.MaxMsgBytes = 1 })
			nw.stabilize()
			nw.campaign(1) // term 2, no-op at 2
			// (a) S1 replicates "a" (index 3, term 2) to S2 only.
			nw.down[3], nw.down[4], nw.down[5] = true, true, true
			nw.propose(1, "a")
			// (b) S1 crashes; S5 wins term 3 with S3, S4 and appends entries no one else gets.
			nw.down[1], nw.down[2] = true, true
			nw.down[3], nw.down[4], nw.down[5] = false, false, false
			nw.drop = func(m Message) bool { return m.From == 5 && (m.Type == MsgApp || m.Type == MsgHeartbeat) }
			nw.campaign(5)
			if nw.leader() != 5 {
				t.Fatalf("(b) leader %d\n%s", nw.leader(), nw)
			}
			if err := nw.node(5).Propose([]byte("b")); err != nil {
				t.Fatal(err)
			}
			nw.stabilize()
			// (c) S5 crashes; S1 restarts and wins term 4 with S2, S3; it replicates "a" to S3 but
			// (in d) not its own no-op.
			nw.down[5] = true
			nw.restart(1)
			nw.down[1], nw.down[2] = false, false
			nw.stabilize() // re-apply the configuration
			nw.drop = func(m Message) bool { return m.From == 1 && m.Type == MsgApp && m.To == 4 }
			if !replicateOwnTerm {
				// Deliver S1's appends without its own-term entries.
				nw.rewrite = func(m Message) Message {
					if m.From == 1 && m.Type == MsgApp {
						for i, e := range m.Entries {
							if e.Term == m.Term {
								m.Entries = m.Entries[:i]
								break
							}
						}
					}
					return m
				}
			}
			// The first attempt (term 3) fails: S3 and S4 voted for S5 in term 3.
			for range 2 {
				if nw.leader() != 1 {
					nw.campaign(1)
				}
			}
			if nw.leader() != 1 || nw.status(1).HardState.Term != 4 {
				t.Fatalf("(c) leader %d\n%s", nw.leader(), nw)
			}
			nw.tick(3)
			for _, id := range []NodeID{1, 2, 3} {
				if terms := logTerms(nw, id); len(terms) < 3 || terms[2] != 2 {
					t.Fatalf("(c) node %d log terms %v: want the term-2 entry at index 3", id, terms)
				}
			}
			commit := nw.status(1).HardState.Commit
			if !replicateOwnTerm && commit != 2 {
				t.Fatalf("(c) the term-2 entry on a majority was committed by counting: commit %d", commit)
			}
			if replicateOwnTerm && commit < 4 {
				t.Fatalf("(e) the term-4 entry on a majority did not commit: commit %d", commit)
			}
			// S1 crashes again; S5 returns and campaigns.
			nw.down[1] = true
			nw.drop, nw.rewrite = nil, nil
			nw.restart(5)
			nw.down[5] = false
			nw.stabilize()
			// As for S1 above, the first attempt may run into votes already cast in its term.
			for range 2 {
				if nw.status(5).SoftState.State != StateLeader {
					nw.campaign(5)
				}
			}
			if replicateOwnTerm {
				// (e) S2 and S3 hold a term-4 entry: S5's log is not up-to-date; it cannot win.
				if nw.status(5).SoftState.State == StateLeader {
					t.Fatal("(e) S5 elected over a committed entry")
				}
			} else {
				// (d) S5 wins with S2, S3, S4 and overwrites index 3 everywhere: safe, because
				// it was never committed.
				if nw.leader() != 5 {
					t.Fatalf("(d) leader %d\n%s", nw.leader(), nw)
				}
				nw.tick(3)
				for _, id := range []NodeID{2, 3, 4} {
					if terms := logTerms(nw, id); terms[2] != 3 {
						t.Fatalf("(d) node %d log terms %v: want index 3 overwritten by term 3", id, terms)
					}
				}
				for _, id := range nw.ids {
					for _, d := range nw.appliedData(id) {
						if d == "a" {
							t.Fatalf("(d) node %d applied the overwritten entry", id)
						}
					}
				}
			}
			nw.checkApplied()
		})
	}
}

// With DeferCommitBroadcast the leader announces a new commit index only with the next entries,
// the next heartbeat, or BroadcastCommit: one append per follower per proposal instead of two,
// and followers apply no later than the driver asks.
func TestDeferCommitBroadcast(t *testing.T) {
	count := func(nw *network) *int {
		n := new(int)
		nw.trace = func(m Message) {
			if m.Type == MsgApp && m.From == 1 {
				*n++
			}
		}
		return n
	}
	t.Run("default broadcasts at once", func(t *testing.T) {
		nw := newNetwork(t, 3)
		nw.stabilize()
		nw.campaign(1)
		apps := count(nw)
		nw.propose(1, "a")
		if *apps != 4 {
			t.Fatalf("%d appends for one proposal, want 4 (entries, then the commit index)", *apps)
		}
		for _, id := range []NodeID{2, 3} {
			if got := nw.appliedData(id); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("node %d applied %q, want [a]", id, got)
			}
		}
		if nw.node(1).CommitUnannounced() {
			t.Fatal("CommitUnannounced without DeferCommitBroadcast")
		}
	})
	t.Run("deferred", func(t *testing.T) {
		nw := newNetwork(t, 3, func(c *Config) { c.DeferCommitBroadcast = true })
		nw.stabilize()
		nw.campaign(1)
		nw.node(1).BroadcastCommit() // the election's no-op
		nw.stabilize()
		apps := count(nw)
		nw.propose(1, "a")
		if *apps != 2 {
			t.Fatalf("%d appends for one proposal, want 2", *apps)
		}
		if got := nw.appliedData(1); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("leader applied %q, want [a]: deferring must not delay the leader", got)
		}
		lead := nw.node(1)
		if !lead.CommitUnannounced() {
			t.Fatal("CommitUnannounced = false with the followers not told of a's commit")
		}
		for _, id := range []NodeID{2, 3} {
			if got := nw.appliedData(id); len(got) != 0 {
				t.Fatalf("node %d applied %q before hearing of the commit", id, got)
			}
			if nw.node(id).CommitUnannounced() {
				t.Fatalf("follower %d reports CommitUnannounced", id)
			}
		}
		// The next entries carry the commit index.
		nw.propose(1, "b")
		for _, id := range []NodeID{2, 3} {
			if got := nw.appliedData(id); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("node %d applied %q after the next append, want [a]", id, got)
			}
		}
		// BroadcastCommit tells them about b, once.
		*apps = 0
		lead.BroadcastCommit()
		nw.stabilize()
		if *apps != 2 || lead.CommitUnannounced() {
			t.Fatalf("BroadcastCommit sent %d appends, unannounced after: %t; want 2, false", *apps, lead.CommitUnannounced())
		}
		lead.BroadcastCommit()
		nw.stabilize()
		if *apps != 2 {
			t.Fatalf("a second BroadcastCommit sent %d more appends, want none", *apps-2)
		}
		for _, id := range []NodeID{2, 3} {
			if got := nw.appliedData(id); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("node %d applied %q after BroadcastCommit, want [a b]", id, got)
			}
		}
		// A heartbeat carries it too.
		nw.propose(1, "c")
		nw.tick(1)
		if lead.CommitUnannounced() {
			t.Fatal("CommitUnannounced after a heartbeat round")
		}
		for _, id := range []NodeID{2, 3} {
			if got := nw.appliedData(id); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Fatalf("node %d applied %q after a heartbeat, want [a b c]", id, got)
			}
		}
		// A follower behind is not owed the commit index: it gets entries, which carry it.
		nw.isolate(3)
		nw.propose(1, "d")
		lead.BroadcastCommit()
		nw.stabilize()
		if lead.CommitUnannounced() {
			t.Fatal("CommitUnannounced owed to a follower that does not hold the entries")
		}
		nw.heal()
		nw.tick(1)
		nw.node(1).BroadcastCommit()
		nw.stabilize()
		if got := nw.appliedData(3); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
			t.Fatalf("node 3 applied %q after healing, want [a b c d]", got)
		}
		nw.checkApplied()
	})
}

func TestProposeAt(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	st := nw.status(1)
	idx, term, err := nw.node(1).ProposeAt([]byte("a"))
	if err != nil || idx != st.LastIndex+1 || term != st.HardState.Term {
		t.Fatalf("leader: ProposeAt = %d, %d, %v; want %d, %d", idx, term, err, st.LastIndex+1, st.HardState.Term)
	}
	if e := nw.node(1).r.log.entry(idx); string(e.Data) != "a" || e.Term != term {
		t.Fatalf("entry at %d is %+v", idx, e)
	}
	if idx, term, err := nw.node(2).ProposeAt([]byte("b")); err != nil || idx != 0 || term != 0 {
		t.Fatalf("follower (forwarding): ProposeAt = %d, %d, %v; want 0, 0, nil", idx, term, err)
	}
	nw.stabilize()
	if got := nw.appliedData(3); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("applied %q, want [a b]", got)
	}
}
