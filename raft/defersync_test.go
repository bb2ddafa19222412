package raft

import "testing"

func withDeferLeaderSync(c *Config) { c.DeferLeaderSync = true }

// readyOf runs one Ready of id by hand, as network.handleReady does (read states aside), and returns it.
func (nw *network) readyOf(id NodeID) Ready {
	nw.t.Helper()
	n := nw.nodes[id]
	if !n.HasReady() {
		nw.t.Fatalf("node %d has no Ready", id)
	}
	rd := n.Ready()
	nw.inflight = append(nw.inflight, rd.Messages...)
	nw.storage[id].persist(rd)
	nw.inflight = append(nw.inflight, rd.MessagesAfterPersist...)
	nw.apply(id, rd)
	n.Advance(rd)
	return rd
}

func TestDeferLeaderSyncCommitsOnFollowersAlone(t *testing.T) {
	nw := newNetwork(t, 3, withDeferLeaderSync)
	nw.stabilize()
	nw.campaign(1)
	if nw.leader() != 1 {
		t.Fatalf("no leader:\n%v", nw)
	}
	// The no-op of the new term committed on the two followers while the leader never reported
	// a sync.
	lead := nw.status(1)
	if lead.Progress[1].Match >= lead.HardState.Commit {
		t.Fatalf("leader's own match %d covers the commit %d without a sync report", lead.Progress[1].Match, lead.HardState.Commit)
	}

	if err := nw.node(1).Propose([]byte("a")); err != nil {
		t.Fatal(err)
	}
	rd := nw.readyOf(1)
	if len(rd.Entries) != 1 || rd.MustSync {
		t.Fatalf("leader's append: %d entries, MustSync %v; want 1 entry without MustSync", len(rd.Entries), rd.MustSync)
	}
	nw.stabilize()
	if got := nw.appliedData(1); len(got) != 1 || got[0] != "a" {
		t.Fatalf("leader applied %q, want [a]", got)
	}
	if nw.node(1).CommitWaitsOnLeaderSync() {
		t.Fatal("CommitWaitsOnLeaderSync with everything committed")
	}
	// Followers sync as always.
	if err := nw.node(2).Propose([]byte("b")); err != nil { // forwarded to the leader
		t.Fatal(err)
	}
	for _, id := range []NodeID{1, 2, 3} {
		for nw.nodes[id].HasReady() {
			if rd := nw.readyOf(id); id != 1 && len(rd.Entries) > 0 && !rd.MustSync {
				t.Fatalf("follower %d may skip the sync of %d entries", id, len(rd.Entries))
			}
		}
		nw.deliver()
	}
	nw.stabilize()
	nw.checkApplied()
}

func TestDeferLeaderSyncWaitsForReportWhenQuorumNeedsLeader(t *testing.T) {
	nw := newNetwork(t, 3, withDeferLeaderSync)
	nw.stabilize()
	nw.campaign(1)
	nw.isolate(3)
	nw.propose(1, "a")
	st := nw.status(1)
	if st.HardState.Commit >= st.LastIndex {
		t.Fatalf("entry %d committed with one follower and no leader sync (commit %d)", st.LastIndex, st.HardState.Commit)
	}
	if !nw.node(1).CommitWaitsOnLeaderSync() {
		t.Fatal("CommitWaitsOnLeaderSync false while the entry waits on the leader's copy")
	}
	// A report from another term is ignored.
	nw.node(1).LeaderSynced(st.HardState.Term-1, st.LastIndex)
	nw.stabilize()
	if c := nw.status(1).HardState.Commit; c >= st.LastIndex {
		t.Fatalf("stale sync report committed %d", c)
	}
	nw.node(1).LeaderSynced(st.HardState.Term, st.LastIndex)
	nw.stabilize()
	if c := nw.status(1).HardState.Commit; c != st.LastIndex {
		t.Fatalf("commit %d after the leader's sync report, want %d", c, st.LastIndex)
	}
	if got := nw.appliedData(2); len(got) != 1 || got[0] != "a" {
		t.Fatalf("follower applied %q, want [a]", got)
	}
	if nw.node(1).CommitWaitsOnLeaderSync() {
		t.Fatal("CommitWaitsOnLeaderSync after the commit")
	}
}

func TestDeferLeaderSyncSingleVoter(t *testing.T) {
	nw := newNetwork(t, 1, withDeferLeaderSync)
	nw.stabilize()
	nw.campaign(1)
	nw.propose(1, "a")
	st := nw.status(1)
	if st.HardState.Commit >= st.LastIndex {
		t.Fatalf("single voter committed %d without syncing", st.HardState.Commit)
	}
	if !nw.node(1).CommitWaitsOnLeaderSync() {
		t.Fatal("single voter: CommitWaitsOnLeaderSync false")
	}
	nw.node(1).LeaderSynced(st.HardState.Term, st.LastIndex+5) // beyond the log: clamped
	nw.stabilize()
	if got := nw.appliedData(1); len(got) != 1 || got[0] != "a" {
		t.Fatalf("applied %q, want [a]", got)
	}
}

func TestDeferLeaderSyncStepDownSyncsFirst(t *testing.T) {
	nw := newNetwork(t, 3, withDeferLeaderSync, withCheckQuorum)
	nw.stabilize()
	nw.campaign(1)
	nw.isolate(1)
	if err := nw.node(1).Propose([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if rd := nw.readyOf(1); rd.MustSync {
		t.Fatal("leader's append must not need a sync")
	}
	// Check-quorum makes the cut-off leader step down in its own term: no term or vote change,
	// no entries, yet the next Ready must sync the write it never synced.
	for i := 0; i < 2*nw.cfgs[1].ElectionTick && nw.status(1).SoftState.State == StateLeader; i++ {
		nw.node(1).Tick()
	}
	if s := nw.status(1).SoftState.State; s == StateLeader {
		t.Fatal("isolated leader did not step down")
	}
	rd := nw.readyOf(1)
	if !rd.MustSync {
		t.Fatalf("first Ready after stepping down with an unsynced write has MustSync false: %+v", rd)
	}
	// Once synced, later Readies need no sync of their own.
	nw.node(1).Tick()
	for nw.node(1).HasReady() {
		if rd := nw.readyOf(1); rd.MustSync && len(rd.Entries) == 0 && rd.HardState.IsEmpty() {
			t.Fatalf("a synced former leader is still asked to sync: %+v", rd)
		}
	}
}

func TestQuorumNeedsLeader(t *testing.T) {
	nw := newNetwork(t, 3, withDeferLeaderSync)
	nw.stabilize()
	nw.campaign(1)
	if nw.node(1).QuorumNeedsLeader() {
		t.Fatal("three voters, both followers replicating: the followers are a quorum")
	}
	nw.isolate(3)
	nw.node(1).ReportUnreachable(3) // the transport noticed: follower 3 is probed now
	if !nw.node(1).QuorumNeedsLeader() {
		t.Fatalf("follower 3 unreachable: the leader's copy is needed, progress %+v", nw.status(1).Progress)
	}
	nw.heal()
	nw.tick(2) // heartbeats find follower 3 again
	nw.propose(1, "a")
	if nw.node(1).QuorumNeedsLeader() {
		t.Fatalf("follower 3 back: the followers are a quorum again, progress %+v", nw.status(1).Progress)
	}

	single := newNetwork(t, 1, withDeferLeaderSync)
	single.stabilize()
	single.campaign(1)
	if !single.node(1).QuorumNeedsLeader() {
		t.Fatal("single voter: no quorum without the leader")
	}
}
