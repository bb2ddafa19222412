package raft

// A leader leaving the configuration: it applied a configuration in which it is not a voter
// (its removal, or its demotion to learner, directly or by leaving a joint configuration whose
// incoming half it is not in) and leads until a voter replaces it; the package doc says why.
// Meanwhile it counts itself in no quorum (commit, ReadIndex and check-quorum count the voters,
// and it never campaigns), keeps replicating and heartbeating, refuses proposals
// (ErrLeaderLeaving), confirms reads only by a quorum round (it is always about to transfer,
// and the transferee's campaign bypasses the lease), and hands leadership over: to the voter
// with the highest match, then, each time a transfer times out, to the best voter not yet tried.
// MsgTimeoutNow goes out only once its whole log is committed, so that what it appended is
// answered by itself: a removed leader hears nothing from its successor. Check-quorum still
// deposes it; the commit index it may then leave unannounced spreads through refused votes
// (learnCommit).

// leaving reports whether this node leads a configuration in which it is not a voter.
func (r *raft) leaving() bool { return r.state == StateLeader && !r.conf.isVoter(r.id) }

// startLeaving runs when the leader applies a configuration without itself as a voter.
func (r *raft) startLeaving() {
	r.logger.Info("raft: not a voter of the applied configuration: leading until a voter takes over", "term", r.term, "index", r.confIndex)
	// Announce the commit index at once (DeferCommitBroadcast may hold it back), in heartbeats,
	// which are never paused: until they learn this configuration committed, the members may
	// still need this member's vote (the outgoing half of a joint configuration).
	r.bcastHeartbeat(r.readOnly.lastPendingCtx())
	if r.leadTransferee == None {
		r.handOver()
	}
}

// handOver starts a leadership transfer to the best voter to succeed a leaving leader.
func (r *raft) handOver() {
	to := r.successor()
	if to == None {
		return
	}
	r.handoverTried = sortedInsert(r.handoverTried, to)
	r.logger.Info("raft: handing leadership over", "to", to, "term", r.term)
	if err := r.handleTransferLeader(to); err != nil {
		r.logger.Warn("raft: cannot hand leadership over", "to", to, "err", err)
	}
}

// successor returns the voter with the highest match among those not tried yet in this round
// of hand-over attempts (lowest ID on ties), starting a new round once every voter was tried.
func (r *raft) successor() NodeID {
	for range 2 {
		best := None
		var bestMatch uint64
		for _, id := range r.conf.voters {
			pr := r.prs[id]
			if pr == nil || id == r.id || sortedHas(r.handoverTried, id) {
				continue
			}
			if best == None || pr.match > bestMatch {
				best, bestMatch = id, pr.match
			}
		}
		if best != None {
			return best
		}
		r.handoverTried = nil
	}
	return None
}

// maybeTimeoutNow tells the transferee to campaign once it holds the leader's whole log (and,
// for a leaving leader, once that log is committed).
func (r *raft) maybeTimeoutNow() {
	to := r.leadTransferee
	if to == None {
		return
	}
	last := r.log.lastIndex()
	if pr := r.prs[to]; pr == nil || pr.match != last {
		return
	}
	if r.leaving() && r.log.committed != last {
		return
	}
	r.logger.Info("raft: transferee caught up, sending MsgTimeoutNow", "to", to)
	r.send(Message{To: to, Type: MsgTimeoutNow})
}

// timeoutNow handles MsgTimeoutNow on a follower (dissertation §3.10: campaign at once, without
// pre-vote, since the leader asked).
func (r *raft) timeoutNow(from NodeID) {
	if r.promotable() && r.hasUnappliedConfChanges() {
		r.logger.Info("raft: received MsgTimeoutNow with committed configuration changes not yet applied: campaigning once they are", "from", from, "term", r.term)
		r.deferredTransfer, r.deferredTransferTicks = true, 0
		return
	}
	r.logger.Info("raft: received MsgTimeoutNow, campaigning", "from", from, "term", r.term)
	r.hup(campaignTransfer)
}

// maybeDeferredTransfer starts the campaign a MsgTimeoutNow asked for once the configuration
// changes that held it back are applied.
func (r *raft) maybeDeferredTransfer() {
	if !r.deferredTransfer || r.state != StateFollower || r.hasUnappliedConfChanges() {
		return
	}
	r.deferredTransfer = false
	r.logger.Info("raft: configuration changes applied, campaigning as asked by MsgTimeoutNow", "term", r.term)
	r.hup(campaignTransfer)
}

// voteRejection is a refused (pre-)vote. It carries this node's commit index and the term of the
// entry there (Commit, LogTerm), which a candidate holding that entry adopts (learnCommit).
func (r *raft) voteRejection(to NodeID, typ MessageType) Message {
	m := Message{To: to, Type: typ, Term: r.term, Reject: true, Commit: r.log.committed}
	if t, err := r.log.term(r.log.committed); err == nil {
		m.LogTerm = t
	}
	return m
}

// learnCommit adopts the commit index a refused (pre-)vote reports, if this node holds the entry
// there: by Log Matching its log is then the same up to that index, all of it committed. Raft
// spreads the commit index from the leader only; a candidate that never heard it for a
// configuration change may need it from whoever knows: a joint configuration's members need
// the outgoing half's votes until they learn it was left, and a member of that half that
// applied the leave as a learner never campaigns, and refuses them its vote while its log is
// longer (a leaving leader deposed by check-quorum with entries after the leave).
func (r *raft) learnCommit(commit, term uint64) {
	if r.state == StateLeader || commit <= r.log.committed || !r.log.matchTerm(commit, term) {
		return
	}
	r.logger.Info("raft: learned the commit index from a refused vote", "commit", commit, "term", r.term)
	r.log.commitTo(commit)
	if (r.state == StateCandidate || r.state == StatePreCandidate) && r.hasUnappliedConfChanges() {
		// The votes of this campaign would be counted in a configuration about to change, in
		// which this node may not even be a voter: give it up, as hup would not have started it.
		r.logger.Info("raft: giving up the campaign: committed configuration changes to apply first", "term", r.term)
		r.becomeFollower(r.term, None)
	}
}
