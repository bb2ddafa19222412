package node

import "github.com/caucus/caucus/raft"

// DriverBugs plants bugs in the node's driving of the Raft core and of its storage, so that
// tests can show the deterministic simulator (internal/sim, run with its node driver) catches
// a broken driver, not only a broken core. For tests only: production leaves every field false.
// Each switch acts at one point of the code, named here.
type DriverBugs struct {
	// AckBeforePersist sends a Ready's MessagesAfterPersist (votes, append acknowledgements)
	// before its HardState and entries are written (handleReady).
	AckBeforePersist bool
	// ReportUnsyncedLeaderSync makes the leader's background sync report its unsynced writes
	// durable without syncing them (syncWritten).
	ReportUnsyncedLeaderSync bool
	// SkipApplyAfterSnapshot drops the first entry committed after an installed snapshot
	// instead of applying it (applySM).
	SkipApplyAfterSnapshot bool
	// AnswerBeforeApply answers this member's proposals as soon as their entries are handed
	// out committed, before the state machine applied them (applySM).
	AnswerBeforeApply bool
	// NeverSyncLog writes every Ready to the log without fsync (persist).
	NeverSyncLog bool
	// ReportAppliedAsLost fails this member's proposals as certainly not applied when their
	// entries commit, as if another entry had taken their place (lostProposals).
	ReportAppliedAsLost bool
}

// answerCommitted is DriverBugs.AnswerBeforeApply: it answers the proposals this member
// appended at the indexes of ents, without a result, before they are applied.
func (n *Node) answerCommitted(ents []raft.Entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range ents {
		a, ok := n.appendedAt[e.Index]
		if !ok || a.term != e.Term || e.Index <= n.applied {
			continue
		}
		if p, ok := n.waiters[a.id]; ok {
			answer(p, proposalResult{})
			delete(n.waiters, a.id) // the real answer finds no one waiting
		}
	}
}
