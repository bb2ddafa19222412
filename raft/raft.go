package raft

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
)

// maxCommittedBytesPerReady bounds the entry bytes handed out in one Ready.CommittedEntries (at
// least one entry is always handed out), so that a node restarting with a long committed log
// applies it in steps instead of building one huge batch.
const maxCommittedBytesPerReady = 64 << 20

// campaignTransferContext marks the vote requests of a campaign started by MsgTimeoutNow. Voters
// grant them even while they hear from a leader (the lease of check-quorum), because the leader
// itself asked for the election (dissertation §3.10).
var campaignTransferContext = []byte("caucus/raft:transfer")

// pcgStream is the second PCG seed word; Config.Seed is the first. It is a fixed odd constant so
// that the random sequence depends on Config.Seed alone.
const pcgStream = 0x9e3779b97f4a7c15

type campaignType uint8

const (
	campaignPreElection campaignType = iota // pre-vote phase first (dissertation §9.6)
	campaignElection                        // a normal election (paper §5.2)
	campaignTransfer                        // an election requested by the leader (dissertation §3.10)
)

// readIndexWait is a ReadIndex request that arrived before the leader committed an entry of its
// term, so its commit index may be stale (dissertation §6.4 step 1).
type readIndexWait struct {
	from NodeID
	ctx  []byte
}

// raft is the consensus core behind Node. All methods run on the caller's goroutine.
type raft struct {
	id     NodeID
	cfg    Config
	logger *slog.Logger
	rng    *rand.Rand

	term  uint64
	vote  NodeID
	lead  NodeID
	state StateType

	log *raftLog

	// conf is the applied configuration; confIndex the index of the entry (or snapshot) it comes
	// from, so that re-applying an entry it already reflects (the bootstrap entry) is a no-op.
	conf      membership
	confIndex uint64
	// memberIDs and voterIDs cache conf.ids() and conf.voterIDs() (sorted), refreshed by
	// syncProgress whenever conf changes; they fix the order in which messages are emitted.
	memberIDs []NodeID
	voterIDs  []NodeID
	// prs has one entry per member; it only means something on the leader.
	prs   map[NodeID]*progress
	votes map[NodeID]bool

	electionElapsed           int
	heartbeatElapsed          int
	randomizedElectionTimeout int

	leadTransferee NodeID
	// handoverTried: the voters a leaving leader tried to hand leadership to in this round
	// (leaving.go).
	handoverTried []NodeID
	// deferredTransfer: a MsgTimeoutNow arrived while committed configuration changes were not
	// yet applied; the campaign starts once they are, unless deferredTransferTicks reach an
	// election timeout first (the leader has given up on the transfer by then).
	deferredTransfer      bool
	deferredTransferTicks int
	// pendingConfIndex: a new configuration change is refused until applied reaches it.
	pendingConfIndex uint64
	// uncommittedSize is the payload bytes the leader appended but has not yet seen committed.
	uncommittedSize  uint64
	readOnly         *readOnly
	pendingReadIndex []readIndexWait
	readStates       []ReadState

	msgs             []Message
	msgsAfterPersist []Message
	// selfAfterPersist holds messages to this node that depend on the pending Ready being
	// persisted (the candidate's own vote, the leader's own append acknowledgement). They never
	// leave the core: Advance steps them.
	selfAfterPersist []Message
	// needBcast: the leader appended entries that are not yet sent. Appends go out when the caller
	// takes the next Ready, so that proposals made in between travel in one message.
	needBcast bool

	snapRecv *snapshotReceiver

	prevSoft SoftState
	prevHard HardState
}

func newRaft(cfg Config, state PersistentState) (*raft, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.InitialVoters = slices.Clone(cfg.InitialVoters)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	r := &raft{
		id:       cfg.ID,
		cfg:      cfg,
		logger:   logger.With("member", cfg.ID),
		rng:      rand.New(rand.NewPCG(cfg.Seed, pcgStream)),
		log:      &raftLog{tolerateViolations: cfg.Bugs != (Bugs{})},
		prs:      map[NodeID]*progress{},
		votes:    map[NodeID]bool{},
		readOnly: newReadOnly(),
	}
	empty := state.HardState.IsEmpty() && state.Snapshot.IsEmpty() && len(state.Entries) == 0
	var err error
	switch {
	case empty && len(cfg.InitialVoters) > 0:
		err = r.bootstrap(cfg.InitialVoters, cfg.InitialContext)
	case empty:
		// A node joining an existing cluster: it learns the configuration from the leader.
	default:
		if len(cfg.InitialVoters) > 0 {
			r.logger.Debug("raft: ignoring InitialVoters on restart from persisted state")
		}
		err = r.restart(state, cfg.Applied)
	}
	if err != nil {
		return nil, err
	}
	r.syncProgress()
	r.becomeFollower(r.term, None)
	r.prevSoft = r.softState()
	return r, nil
}

// bootstrap writes the first entry of a brand-new cluster. Every initial member must produce the
// same bytes, so the voters are sorted and the encoding is deterministic.
func (r *raft) bootstrap(initial []NodeID, context []byte) error {
	voters := sortedSet(initial)
	if len(voters) != len(initial) {
		return fmt.Errorf("raft: bootstrap: InitialVoters %v contains duplicates", initial)
	}
	if sortedHas(voters, None) {
		return fmt.Errorf("raft: bootstrap: InitialVoters %v contains node ID 0 (None)", initial)
	}
	if !sortedHas(voters, r.id) {
		return fmt.Errorf("raft: bootstrap: node %d is not among InitialVoters %v", r.id, initial)
	}
	cc := ConfChange{Changes: make([]ConfChangeSingle, 0, len(voters)), Context: slices.Clone(context)}
	for _, id := range voters {
		cc.Changes = append(cc.Changes, ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: id})
	}
	conf, err := applyConfChange(membership{}, cc)
	if err != nil {
		return fmt.Errorf("raft: bootstrap: %w", err)
	}
	r.log.entries = []Entry{{Term: 1, Index: 1, Type: EntryConfChange, Data: EncodeConfChange(cc)}}
	r.log.committed = 1
	r.term = 1
	r.conf, r.confIndex = conf, 1
	return nil
}

// restart rebuilds the core from persisted state: the log from the snapshot and entries, the
// configuration from the snapshot plus every configuration entry up to the applied index
// (configurations take effect when applied).
func (r *raft) restart(state PersistentState, applied uint64) error {
	l := r.log
	if !state.Snapshot.IsEmpty() {
		s := *state.Snapshot
		conf, err := membershipFromConfState(s.Meta.ConfState)
		if err != nil {
			return fmt.Errorf("raft: restart: snapshot at %d: %w", s.Meta.Index, err)
		}
		l.snap = s
		r.conf, r.confIndex = conf, s.Meta.Index
	}
	prevIndex, prevTerm := l.snap.Meta.Index, l.snap.Meta.Term
	for i, e := range state.Entries {
		if e.Index != prevIndex+1 {
			return fmt.Errorf("raft: restart: entry %d has index %d, want %d (entries must follow the snapshot at %d contiguously)", i, e.Index, prevIndex+1, l.snap.Meta.Index)
		}
		if e.Term < prevTerm {
			return fmt.Errorf("raft: restart: entry %d has term %d below the previous term %d", e.Index, e.Term, prevTerm)
		}
		prevIndex, prevTerm = e.Index, e.Term
	}
	l.entries = slices.Clone(state.Entries)
	l.stable = l.lastIndex()
	l.durable = l.stable // what a restart reads back is what the caller persisted
	hs := state.HardState
	if hs.Term < l.lastTerm() {
		return fmt.Errorf("raft: restart: HardState term %d below the last entry's term %d", hs.Term, l.lastTerm())
	}
	if hs.Commit > l.lastIndex() {
		return fmt.Errorf("raft: restart: HardState commit %d beyond the last index %d", hs.Commit, l.lastIndex())
	}
	if applied > l.lastIndex() {
		return fmt.Errorf("raft: restart: Config.Applied %d beyond the last index %d", applied, l.lastIndex())
	}
	// Commit is persisted lazily and the snapshot is committed by definition; entries the state
	// machine applied were committed too (they were handed out only once committed).
	l.committed = max(hs.Commit, l.snap.Meta.Index, applied)
	l.applied = max(applied, l.snap.Meta.Index)
	r.term, r.vote = hs.Term, hs.Vote
	r.prevHard = hs
	for i := l.snap.Meta.Index + 1; i <= l.applied; i++ {
		if e := l.entry(i); e.Type == EntryConfChange {
			r.applyConfEntry(e)
		}
	}
	return nil
}

// --- roles -------------------------------------------------------------------------------------

// reset clears the per-term volatile state. Changing term forgets the vote (paper Figure 2: one
// vote per term).
func (r *raft) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = None
		r.snapRecv = nil // a partial snapshot belongs to the previous term's leader
	}
	r.lead = None
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.leadTransferee = None
	r.handoverTried = nil
	r.deferredTransfer, r.deferredTransferTicks = false, 0
	clear(r.votes)
	for _, id := range r.memberIDs {
		r.prs[id] = newProgress(r.log.lastIndex()+1, r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes, sortedHas(r.conf.learners, id))
	}
	r.pendingConfIndex = 0
	r.uncommittedSize = 0
	r.readOnly = newReadOnly()
	r.pendingReadIndex = nil
	r.needBcast = false
}

// resetRandomizedElectionTimeout draws the timeout from [ElectionTick, 2*ElectionTick) so that
// split votes are rare and resolve quickly (paper §5.2).
func (r *raft) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.cfg.ElectionTick + r.rng.IntN(r.cfg.ElectionTick)
}

func (r *raft) becomeFollower(term uint64, lead NodeID) {
	prevLead, prevState := r.lead, r.state
	r.reset(term)
	r.lead = lead
	r.state = StateFollower
	if lead != prevLead || prevState != StateFollower {
		r.logger.Info("raft: became follower", "term", r.term, "leader", lead)
	}
}

func (r *raft) becomePreCandidate() {
	if r.state == StateLeader {
		panic("raft: invalid transition leader -> pre-candidate")
	}
	// Pre-vote changes neither the term nor the vote: that is its point (dissertation §9.6).
	r.state = StatePreCandidate
	r.lead = None
	clear(r.votes)
	// A fresh timeout, so that pre-candidates that collided do not collide again.
	r.resetRandomizedElectionTimeout()
	r.logger.Info("raft: became pre-candidate", "term", r.term)
}

func (r *raft) becomeCandidate() {
	if r.state == StateLeader {
		panic("raft: invalid transition leader -> candidate")
	}
	r.reset(r.term + 1)
	r.vote = r.id
	r.state = StateCandidate
	r.logger.Info("raft: became candidate", "term", r.term)
}

func (r *raft) becomeLeader() {
	if r.state == StateFollower {
		panic("raft: invalid transition follower -> leader")
	}
	r.reset(r.term)
	r.lead = r.id
	r.state = StateLeader
	for _, id := range r.memberIDs {
		r.prs[id].recentActive = true
	}
	// The leader's own match is what it has synced; its own append acknowledgements (stepped in
	// Advance, or reported by LeaderSynced) raise it, so the leader's disk counts like any
	// follower's (dissertation §10.2.1).
	self := r.prs[r.id]
	self.match = r.log.durable
	self.becomeReplicate()
	self.next = r.log.lastIndex() + 1
	// A no-op of the new term lets the leader commit the entries of earlier terms (paper §5.4.2)
	// and learn the commit index ReadIndex needs (dissertation §6.4).
	r.appendEntries(Entry{Type: EntryNormal})
	// No configuration change until the no-op is applied: by then every earlier change is applied
	// and an entry of this term is committed (dissertation §4.1.1 fix, as etcd).
	r.pendingConfIndex = r.log.lastIndex()
	r.logger.Info("raft: became leader", "term", r.term)
}

func (r *raft) promotable() bool { return r.conf.isVoter(r.id) }

func (r *raft) softState() SoftState { return SoftState{Lead: r.lead, State: r.state} }

func (r *raft) hardState() HardState {
	hs := HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
	if r.cfg.Bugs.VoteNotPersisted {
		hs.Vote = None // planted bug: the vote is never made durable
	}
	return hs
}

// --- time --------------------------------------------------------------------------------------

func (r *raft) tick() {
	if r.state == StateLeader {
		r.tickHeartbeat()
	} else {
		r.tickElection()
	}
}

func (r *raft) tickElection() {
	r.electionElapsed++
	if r.deferredTransfer {
		if r.deferredTransferTicks++; r.deferredTransferTicks >= r.cfg.ElectionTick {
			r.deferredTransfer = false
		}
	}
	if r.promotable() && r.electionElapsed >= r.randomizedElectionTimeout {
		r.electionElapsed = 0
		r.hup(r.defaultCampaign())
	}
}

func (r *raft) tickHeartbeat() {
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.cfg.ElectionTick {
		r.electionElapsed = 0
		if r.cfg.CheckQuorum && !r.checkQuorumActive() {
			// Paper §6.2 / dissertation §6.2: a leader that cannot reach a quorum steps down so
			// that clients find the real leader (and lease reads stay safe).
			r.logger.Warn("raft: stepping down: no quorum heard from within an election timeout", "term", r.term)
			r.becomeFollower(r.term, None)
			return
		}
		if r.leadTransferee != None {
			r.logger.Info("raft: leadership transfer timed out", "term", r.term, "transferee", r.leadTransferee)
			r.leadTransferee = None
		}
		if r.leaving() {
			r.handOver()
		}
	}
	if r.heartbeatElapsed >= r.cfg.HeartbeatTick {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat(r.readOnly.lastPendingCtx())
		r.tickSnapshots()
	}
}

// checkQuorumActive reports whether a quorum was heard from since the last call, and starts a
// new round.
func (r *raft) checkQuorumActive() bool {
	act := map[NodeID]bool{}
	for _, id := range r.voterIDs {
		pr := r.prs[id]
		act[id] = id == r.id || (pr != nil && pr.recentActive)
	}
	for id, pr := range r.prs {
		if id != r.id {
			pr.recentActive = false
		}
	}
	return jointVote(r.conf.voters, r.conf.outgoing, act) == voteWon
}

// --- elections ---------------------------------------------------------------------------------

func (r *raft) defaultCampaign() campaignType {
	if r.cfg.PreVote {
		return campaignPreElection
	}
	return campaignElection
}

// hup starts a campaign if this node may. It refuses while a committed configuration change is
// unapplied, because the node may not even be a voter in the configuration it is about to adopt.
func (r *raft) hup(t campaignType) {
	if r.state == StateLeader {
		return
	}
	if !r.promotable() {
		r.logger.Debug("raft: not campaigning: not a voter")
		return
	}
	if r.hasUnappliedConfChanges() {
		r.logger.Warn("raft: not campaigning: committed configuration changes are not yet applied", "applied", r.log.applied, "committed", r.log.committed)
		return
	}
	r.campaignNow(t)
}

func (r *raft) hasUnappliedConfChanges() bool {
	lo := max(r.log.applied+1, r.log.firstIndex())
	for i := lo; i <= r.log.committed; i++ {
		if r.log.entry(i).Type == EntryConfChange {
			return true
		}
	}
	return false
}

func (r *raft) campaignNow(t campaignType) {
	var term uint64
	var typ MessageType
	if t == campaignPreElection {
		r.becomePreCandidate()
		typ, term = MsgPreVote, r.term+1 // the term we would campaign in
	} else {
		r.becomeCandidate()
		typ, term = MsgVote, r.term
	}
	var ctx []byte
	if t == campaignTransfer {
		ctx = campaignTransferContext
	}
	for _, id := range r.voterIDs {
		if id == r.id {
			// The candidate's own vote counts only once the HardState recording it is durable,
			// exactly like anyone else's; a pre-vote records nothing and counts at once.
			if typ == MsgPreVote || r.cfg.Bugs.VoteNotPersisted {
				r.poll(r.id, true)
			} else {
				r.sendAfterPersist(Message{To: r.id, Type: MsgVoteResp, Term: term})
			}
			continue
		}
		r.send(Message{To: id, Type: typ, Term: term, Index: r.log.lastIndex(), LogTerm: r.log.lastTerm(), Context: ctx})
	}
	if r.state == StatePreCandidate || r.state == StateCandidate {
		r.checkElection()
	}
}

// poll records a vote.
func (r *raft) poll(id NodeID, granted bool) {
	if _, ok := r.votes[id]; !ok {
		r.votes[id] = granted
	}
}

// checkElection acts on the tally so far.
func (r *raft) checkElection() {
	res := jointVote(r.conf.voters, r.conf.outgoing, r.votes)
	if r.cfg.Bugs.VoteCountsIncomingOnly {
		res = majorityVote(r.conf.voters, r.votes) // planted bug: the outgoing half is ignored
	}
	switch res {
	case voteWon:
		if r.state == StatePreCandidate {
			r.campaignNow(campaignElection)
			return
		}
		r.becomeLeader()
		r.bcastAppend()
	case voteLost:
		r.becomeFollower(r.term, None)
	}
}

func (r *raft) handleVoteRequest(m Message) {
	// Paper Figure 2 RequestVote rule 2 (one vote per term, durable) and §5.4.1 (the candidate's
	// log is at least as up-to-date). A pre-vote for a future term commits us to nothing.
	canVote := r.vote == m.From || (r.vote == None && r.lead == None) || (m.Type == MsgPreVote && m.Term > r.term)
	upToDate := r.cfg.Bugs.VoteForShorterLog || r.log.isUpToDate(m.Index, m.LogTerm)
	respType := MsgVoteResp
	if m.Type == MsgPreVote {
		respType = MsgPreVoteResp
	}
	if canVote && upToDate {
		resp := Message{To: m.From, Type: respType, Term: m.Term}
		if m.Type == MsgPreVote {
			r.send(resp)
			return
		}
		r.electionElapsed = 0
		r.vote = m.From
		if r.cfg.Bugs.VoteNotPersisted {
			r.send(resp) // planted bug: the grant leaves before the vote is durable
		} else {
			r.sendAfterPersist(resp)
		}
		return
	}
	resp := r.voteRejection(m.From, respType)
	if m.Type == MsgPreVote {
		r.send(resp)
	} else {
		r.sendAfterPersist(resp)
	}
}

// --- messages ----------------------------------------------------------------------------------

// stamp fills From and Term. Forwarded proposals and read requests carry no term: they are
// requests to whoever leads, not part of the term protocol (as etcd).
func (r *raft) stamp(m *Message) {
	if m.From == None {
		m.From = r.id
	}
	if m.Term == 0 && m.Type != MsgProp && m.Type != MsgReadIndex {
		m.Term = r.term
	}
}

// send queues m for Ready.Messages: it does not depend on anything not yet persisted.
func (r *raft) send(m Message) {
	r.stamp(&m)
	if m.To == r.id {
		panic(fmt.Sprintf("raft: %v addressed to self outside the after-persist path", m.Type))
	}
	r.msgs = append(r.msgs, m)
}

// sendAfterPersist queues m for Ready.MessagesAfterPersist: it acknowledges state of the pending
// Ready (a vote, appended entries).
func (r *raft) sendAfterPersist(m Message) {
	r.stamp(&m)
	if m.To == r.id {
		r.selfAfterPersist = append(r.selfAfterPersist, m)
		return
	}
	r.msgsAfterPersist = append(r.msgsAfterPersist, m)
}

func (r *raft) step(m Message) error {
	if m.To != r.id {
		return fmt.Errorf("raft: step %v from %d: addressed to node %d, this is node %d", m.Type, m.From, m.To, r.id)
	}
	if (m.Type == MsgVoteResp || m.Type == MsgPreVoteResp) && m.Reject {
		r.learnCommit(m.Commit, m.LogTerm)
	}
	switch {
	case m.Term == 0:
		if m.Type != MsgProp && m.Type != MsgReadIndex {
			return fmt.Errorf("raft: step %v from %d: message without a term", m.Type, m.From)
		}
	case m.Term > r.term:
		// Dissertation §4.2.3 (check-quorum) and §9.6 (pre-vote): a node that heard from a live
		// leader within the election timeout ignores campaigns, so that a partitioned or removed
		// node cannot disrupt the cluster. A pre-vote is ignored whenever pre-vote is on, as §9.6
		// describes (etcd only does so with check-quorum); a real vote only with check-quorum,
		// because without it a follower cannot tell a live leader from a stale one.
		if m.Type == MsgVote || m.Type == MsgPreVote {
			force := bytes.Equal(m.Context, campaignTransferContext)
			leaseApplies := r.cfg.CheckQuorum || (m.Type == MsgPreVote && r.cfg.PreVote)
			inLease := leaseApplies && r.lead != None && r.electionElapsed < r.cfg.ElectionTick
			if !force && inLease {
				r.logger.Debug("raft: ignoring vote request within the leader lease", "type", m.Type, "from", m.From, "term", m.Term)
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote request's term is hypothetical: adopting it is what pre-vote avoids.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted pre-vote echoes the term we would campaign in; we have not moved to it.
		case m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap:
			r.becomeFollower(m.Term, m.From)
		case m.Type == MsgVote:
			// Adopt the term but keep the election timer running: paper Figure 2 resets it only
			// when granting the vote (handleVoteRequest does). Otherwise a candidate whose log
			// is too stale to win would keep postponing the elections of those who could.
			elapsed := r.electionElapsed
			r.becomeFollower(m.Term, None)
			r.electionElapsed = elapsed
		default:
			r.becomeFollower(m.Term, None)
		}
	case m.Term < r.term:
		switch {
		case m.Type == MsgHeartbeat || m.Type == MsgApp:
			// A stale leader (e.g. back from a partition) must learn the newer term. etcd only
			// answers with pre-vote or check-quorum, relying otherwise on our campaigns to spread
			// the term; but a learner never campaigns, and would stay stranded in a higher term
			// forever under a leader that never hears of it.
			r.send(Message{To: m.From, Type: MsgAppResp})
		case m.Type == MsgPreVote:
			// Tell the pre-candidate our term so that it stops campaigning in the past.
			r.send(r.voteRejection(m.From, MsgPreVoteResp))
		}
		return nil
	}
	switch m.Type {
	case MsgVote, MsgPreVote:
		r.handleVoteRequest(m)
		return nil
	}
	switch r.state {
	case StateLeader:
		return r.stepLeader(m)
	case StateCandidate, StatePreCandidate:
		return r.stepCandidate(m)
	}
	return r.stepFollower(m)
}

func (r *raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgProp:
		if r.lead == None || r.cfg.DisableProposalForwarding {
			r.logger.Debug("raft: dropping forwarded proposal: no leader to forward to", "from", m.From)
			return nil
		}
		m.To = r.lead // From stays the origin, as for MsgReadIndex
		r.send(m)
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppendEntries(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleHeartbeat(m)
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTransferLeader:
		if r.lead != None {
			m.To = r.lead
			r.send(m)
		}
	case MsgTimeoutNow:
		r.timeoutNow(m.From)
	case MsgReadIndex:
		if r.lead != None {
			m.To = r.lead
			r.send(m)
		}
	case MsgReadIndexResp:
		if m.Reject {
			r.logger.Debug("raft: read index refused by the leader", "from", m.From)
			return nil
		}
		r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context})
	}
	return nil
}

func (r *raft) stepCandidate(m Message) error {
	respType := MsgVoteResp
	if r.state == StatePreCandidate {
		respType = MsgPreVoteResp
	}
	switch m.Type {
	case MsgApp:
		// A leader of our term exists (it won the election we are in).
		r.becomeFollower(m.Term, m.From)
		r.handleAppendEntries(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.becomeFollower(m.Term, m.From)
		r.handleSnapshot(m)
	case respType:
		r.poll(m.From, !m.Reject)
		r.checkElection()
	}
	return nil
}

func (r *raft) stepLeader(m Message) error {
	switch m.Type {
	case MsgProp:
		r.handleForwardedProposal(m)
		return nil
	case MsgReadIndex:
		if err := r.handleReadIndex(m.From, m.Context); err != nil {
			r.logger.Debug("raft: refusing forwarded read index", "from", m.From, "err", err)
		}
		return nil
	case MsgTransferLeader:
		if err := r.handleTransferLeader(m.From); err != nil {
			r.logger.Info("raft: refusing forwarded leadership transfer", "to", m.From, "err", err)
		}
		return nil
	}
	pr := r.prs[m.From]
	if pr == nil {
		return nil // not a member (any more)
	}
	switch m.Type {
	case MsgAppResp:
		r.handleAppendResponse(m, pr)
	case MsgHeartbeatResp:
		pr.recentActive = true
		pr.probeSent = false
		if pr.state == ProgressReplicate && pr.inflights.full() {
			// The follower is alive but the window is full: appends (or their acks) may have been
			// lost. Free one slot so an append goes out; if the follower lacks what it follows, its
			// rejection sends us back to probe. Without this a lossy link stalls forever.
			pr.inflights.freeFirst()
		}
		if pr.match < r.log.lastIndex() {
			r.maybeSendAppend(m.From, true)
		}
		if len(m.Context) > 0 {
			acks := r.readOnly.recvAck(m.From, m.Context)
			if acks != nil && r.readConfirmed(acks) {
				for _, rr := range r.readOnly.advance(m.Context) {
					r.respondReadIndex(rr.from, rr.index, rr.ctx)
				}
			}
		}
	case MsgSnapResp:
		pr.recentActive = true
		r.handleSnapshotResponse(m, pr)
	}
	return nil
}

// --- replication -------------------------------------------------------------------------------

// appendEntries assigns the leader's term and the next indexes to ents and appends them. The
// leader's own acknowledgement is stepped in Advance, after the caller persisted them.
func (r *raft) appendEntries(ents ...Entry) {
	li := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = li + 1 + uint64(i)
	}
	r.log.append(ents...)
	r.needBcast = true
	// One pending self-acknowledgement per term is enough: the latest covers the earlier ones.
	if n := len(r.selfAfterPersist); n > 0 {
		if last := &r.selfAfterPersist[n-1]; last.Type == MsgAppResp && last.Term == r.term {
			last.Index = r.log.lastIndex()
			return
		}
	}
	r.sendAfterPersist(Message{To: r.id, Type: MsgAppResp, Index: r.log.lastIndex()})
}

// proposeEntries appends client entries if the leader accepts proposals now.
func (r *raft) proposeEntries(ents []Entry) error {
	if r.leaving() {
		return ErrLeaderLeaving
	}
	if r.leadTransferee != None {
		// Dissertation §3.10: stop accepting client requests during a transfer, so the target can
		// catch up and the transfer can complete.
		return fmt.Errorf("%w: leadership transfer to %d in progress", ErrProposalDropped, r.leadTransferee)
	}
	var size uint64
	for i := range ents {
		size += payloadSize(&ents[i])
	}
	// An empty budget admits any one proposal, so that a proposal larger than the limit is not
	// refused forever.
	if r.cfg.MaxUncommittedEntriesBytes > 0 && r.uncommittedSize > 0 && r.uncommittedSize+size > r.cfg.MaxUncommittedEntriesBytes {
		return fmt.Errorf("%w (%d uncommitted + %d proposed > MaxUncommittedEntriesBytes %d)", ErrTooManyUncommitted, r.uncommittedSize, size, r.cfg.MaxUncommittedEntriesBytes)
	}
	r.uncommittedSize += size
	r.appendEntries(ents...)
	return nil
}

func (r *raft) reduceUncommittedSize(ents []Entry) {
	var size uint64
	for i := range ents {
		size += payloadSize(&ents[i])
	}
	// Entries committed after a leadership change were counted by another leader.
	r.uncommittedSize -= min(size, r.uncommittedSize)
}

func (r *raft) handleForwardedProposal(m Message) {
	ents := make([]Entry, 0, len(m.Entries))
	confInBatch := false
	for _, e := range m.Entries {
		if e.Type == EntryConfChange {
			cc, err := DecodeConfChange(e.Data)
			if err == nil {
				err = r.checkConfChange(cc)
			}
			if err == nil && confInBatch {
				err = fmt.Errorf("%w (another one earlier in the same batch)", ErrConfChangePending)
			}
			confInBatch = confInBatch || err == nil
			if err != nil {
				r.logger.Info("raft: dropping forwarded configuration change", "from", m.From, "err", err)
				continue
			}
		}
		ents = append(ents, Entry{Type: e.Type, Data: e.Data})
	}
	if len(ents) == 0 {
		return
	}
	if err := r.proposeEntries(ents); err != nil {
		r.logger.Debug("raft: dropping forwarded proposal", "from", m.From, "err", err)
		return
	}
	for _, e := range ents {
		if e.Type == EntryConfChange {
			r.pendingConfIndex = e.Index
		}
	}
}

// flushAppends sends the appends that proposals since the last Ready made necessary.
func (r *raft) flushAppends() {
	if r.needBcast {
		r.needBcast = false
		if r.state == StateLeader {
			r.bcastAppend()
		}
	}
}

func (r *raft) bcastAppend() {
	for _, id := range r.memberIDs {
		if id == r.id || !r.maybeSendAppend(id, true) {
			continue
		}
		// A follower in sync gets everything new at once, up to the inflight window.
		for r.prs[id].state == ProgressReplicate && r.maybeSendAppend(id, false) {
		}
	}
}

// maybeSendAppend sends to a follower the entries after its Next (paper §5.3), or the snapshot if
// they are compacted. With sendIfEmpty it sends an empty append too (to probe, or to carry the
// commit index). It reports whether it sent anything.
func (r *raft) maybeSendAppend(to NodeID, sendIfEmpty bool) bool {
	pr := r.prs[to]
	if to == r.id || pr == nil || pr.isPaused() {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, err := r.log.term(prevIndex)
	if errors.Is(err, errUnavailable) {
		panic(fmt.Sprintf("raft: next index %d for %d beyond the leader's last index %d", pr.next, to, r.log.lastIndex()))
	}
	if err != nil {
		return r.sendSnapshot(to, pr)
	}
	ents, err := r.log.slice(pr.next, r.log.lastIndex()+1, r.cfg.MaxMsgBytes)
	if err != nil {
		return r.sendSnapshot(to, pr)
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	var size uint64
	for i := range ents {
		size += entrySize(&ents[i])
	}
	r.send(Message{To: to, Type: MsgApp, Index: prevIndex, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	pr.sentCommit = max(pr.sentCommit, r.log.committed)
	pr.sentEntries(prevIndex+uint64(len(ents)), len(ents), size)
	return true
}

func (r *raft) handleAppendEntries(m Message) {
	if m.Index < r.log.committed {
		// Everything up to committed matches the leader already (Leader Completeness).
		r.sendAfterPersist(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
		return
	}
	if lastNew, ok := r.log.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries); ok {
		r.sendAfterPersist(Message{To: m.From, Type: MsgAppResp, Index: lastNew})
		return
	}
	// Consistency check failed (paper §5.3). Hint the leader past a whole term of conflicting
	// entries at once: our last entry at or before m.Index whose term is <= m.LogTerm.
	hintIndex, hintTerm := r.log.findConflictByTerm(m.Index, m.LogTerm)
	r.sendAfterPersist(Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true, RejectHint: hintIndex, LogTerm: hintTerm})
}

func (r *raft) handleHeartbeat(m Message) {
	// The leader sends min(its commit, our match), which our log holds.
	r.log.commitTo(m.Commit)
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Context: m.Context})
}

func (r *raft) handleAppendResponse(m Message, pr *progress) {
	pr.recentActive = true
	if m.Reject {
		// Fast backtracking: skip every leader entry above the follower's hint whose term cannot
		// match (the leader's last entry at or before the hint with term <= the hinted term).
		nextProbe := m.RejectHint
		if m.LogTerm > 0 {
			nextProbe, _ = r.log.findConflictByTerm(m.RejectHint, m.LogTerm)
		}
		if pr.maybeDecrTo(m.Index, nextProbe) {
			if pr.state == ProgressReplicate {
				pr.becomeProbe()
			}
			r.maybeSendAppend(m.From, true)
		}
		return
	}
	if m.Index > r.log.lastIndex() {
		// The follower holds entries this leader lacks: impossible under Leader Completeness, so
		// only reachable with a planted bug. Ignoring it keeps the leader's bookkeeping sane.
		r.logger.Error("raft: follower acknowledged an index beyond the leader's log", "from", m.From, "index", m.Index, "last", r.log.lastIndex())
		return
	}
	wasPaused := pr.isPaused()
	if !pr.maybeUpdate(m.Index) && !(pr.match == m.Index && pr.state == ProgressProbe) {
		return
	}
	switch {
	case pr.state == ProgressProbe:
		pr.becomeReplicate()
	case pr.state == ProgressSnapshot && pr.match+1 >= r.log.firstIndex():
		r.logger.Info("raft: follower caught up from snapshot", "to", m.From, "match", pr.match)
		pr.becomeProbe()
		pr.becomeReplicate()
	case pr.state == ProgressSnapshot && pr.match >= pr.pendingSnapshot:
		// The follower installed the snapshot we sent, but we compacted past it meanwhile: probe,
		// which starts a transfer of the newer snapshot at once.
		pr.becomeProbe()
	case pr.state == ProgressReplicate:
		pr.inflights.freeLE(m.Index)
	}
	committed := r.maybeCommit()
	if committed && !r.cfg.DeferCommitBroadcast {
		r.bcastAppend()
	} else if wasPaused {
		r.maybeSendAppend(m.From, true)
	}
	// Fill the pipeline window.
	for r.maybeSendAppend(m.From, false) {
	}
	if m.From == r.leadTransferee || (committed && r.leaving()) {
		r.maybeTimeoutNow()
	}
}

// maybeCommit advances the commit index to what a quorum has matched, but only if that entry is
// of the current term (paper §5.4.2, Figure 8): an old-term entry is committed indirectly, by a
// current-term entry after it.
func (r *raft) maybeCommit() bool {
	mci := jointCommitted(r.conf.voters, r.conf.outgoing, func(id NodeID) uint64 {
		if pr := r.prs[id]; pr != nil {
			return pr.match
		}
		return 0
	})
	if mci <= r.log.committed || mci == ^uint64(0) {
		return false
	}
	t, err := r.log.term(mci)
	if err != nil {
		panic(fmt.Sprintf("raft: quorum match %d outside the leader's log: %v", mci, err))
	}
	if t != r.term && !r.cfg.Bugs.CommitOldTermByCounting {
		return false
	}
	r.log.commitTo(mci)
	if t == r.term {
		r.releasePendingReadIndex()
	}
	return true
}

func (r *raft) bcastHeartbeat(ctx []byte) {
	for _, id := range r.memberIDs {
		if id == r.id {
			continue
		}
		// Never tell a follower to commit beyond what it is known to hold.
		pr := r.prs[id]
		commit := min(pr.match, r.log.committed)
		r.send(Message{To: id, Type: MsgHeartbeat, Commit: commit, Context: ctx})
		pr.sentCommit = max(pr.sentCommit, commit)
	}
}

// owesCommit reports whether follower id holds entries up to a commit index the leader has not
// sent it (only possible with Config.DeferCommitBroadcast) and could be sent one now. A paused
// follower (an append or snapshot chunk unanswered, or a full window) is not counted: nothing
// can be sent to it, and the appends that resume it, or the next heartbeat, carry the index.
func (r *raft) owesCommit(id NodeID) bool {
	pr := r.prs[id]
	return id != r.id && pr != nil && !pr.isPaused() && pr.sentCommit < min(pr.match, r.log.committed)
}

// commitUnannounced reports whether the leader owes some follower its commit index.
func (r *raft) commitUnannounced() bool {
	if r.state != StateLeader {
		return false
	}
	for _, id := range r.memberIDs {
		if r.owesCommit(id) {
			return true
		}
	}
	return false
}

// broadcastCommit sends the commit index to every follower owed it, in an empty append (or the
// next entries, if there are any to send).
func (r *raft) broadcastCommit() {
	if r.state != StateLeader {
		return
	}
	for _, id := range r.memberIDs {
		if r.owesCommit(id) {
			r.maybeSendAppend(id, true)
		}
	}
}

func (r *raft) reportUnreachable(id NodeID) {
	if r.state != StateLeader {
		return
	}
	if pr := r.prs[id]; pr != nil && pr.state == ProgressReplicate {
		// Whatever was pipelined may be lost; find out where the follower really is.
		pr.becomeProbe()
	}
}

// --- leadership transfer -----------------------------------------------------------------------

func (r *raft) handleTransferLeader(to NodeID) error {
	if !sortedHas(r.conf.voters, to) {
		return fmt.Errorf("raft: transfer leadership to %d: not a voter of the (incoming) configuration", to)
	}
	if r.leadTransferee != None {
		if r.leadTransferee == to {
			return nil
		}
		r.logger.Info("raft: abandoning leadership transfer for a new one", "from", r.leadTransferee, "to", to)
		r.leadTransferee = None
	}
	if to == r.id {
		return nil
	}
	// The transfer gets one election timeout to complete (dissertation §3.10).
	r.electionElapsed = 0
	r.leadTransferee = to
	r.logger.Info("raft: transferring leadership", "to", to, "term", r.term)
	if r.prs[to].match == r.log.lastIndex() {
		r.maybeTimeoutNow()
	} else {
		r.maybeSendAppend(to, true)
	}
	return nil
}

// --- read index --------------------------------------------------------------------------------

// handleReadIndex serves a ReadIndex request on the leader (dissertation §6.4).
func (r *raft) handleReadIndex(from NodeID, ctx []byte) error {
	if r.cfg.Bugs.ReadIndexWithoutQuorum {
		r.respondReadIndex(from, r.log.committed, ctx) // planted bug: leadership not confirmed
		return nil
	}
	if !r.committedInTerm() {
		// Step 1: until an entry of its term commits, the leader does not know the commit index.
		if len(r.pendingReadIndex) >= maxPendingReadIndex {
			return r.refuseReadIndex(from, ctx)
		}
		r.pendingReadIndex = append(r.pendingReadIndex, readIndexWait{from: from, ctx: ctx})
		return nil
	}
	return r.serveReadIndex(from, ctx)
}

// readConfirmed reports whether the voters in acks confirm this leader's leadership: a majority
// of each half of a joint configuration, as for an election.
func (r *raft) readConfirmed(acks map[NodeID]bool) bool {
	if r.cfg.Bugs.ReadIndexCountsIncomingOnly {
		return majorityVote(r.conf.voters, acks) == voteWon // planted bug: the outgoing half is ignored
	}
	return jointVote(r.conf.voters, r.conf.outgoing, acks) == voteWon
}

func (r *raft) committedInTerm() bool {
	t, err := r.log.term(r.log.committed)
	return err == nil && t == r.term
}

func (r *raft) serveReadIndex(from NodeID, ctx []byte) error {
	if r.conf.isSingleton(r.id) {
		// The leader alone is a quorum: nobody can have deposed it.
		r.respondReadIndex(from, r.log.committed, ctx)
		return nil
	}
	if r.cfg.ReadOnlyOption == ReadOnlyLeaseBased && r.leadTransferee == None && !r.leaving() {
		// Dissertation §6.4.1: within its lease (check-quorum) no other leader can exist. Not
		// during a leadership transfer: the transferee's vote requests bypass the lease, so a new
		// leader may exist before this one notices; confirm with a quorum round instead. A
		// leaving leader is always about to transfer (between two attempts, too).
		r.respondReadIndex(from, r.log.committed, ctx)
		return nil
	}
	if r.readOnly.len() >= maxPendingReadIndex {
		return r.refuseReadIndex(from, ctx)
	}
	// Steps 2-3: record the commit index, then confirm leadership with a heartbeat round.
	r.readOnly.add(r.log.committed, from, ctx)
	if acks := r.readOnly.recvAck(r.id, ctx); acks != nil && r.readConfirmed(acks) {
		for _, rr := range r.readOnly.advance(ctx) {
			r.respondReadIndex(rr.from, rr.index, rr.ctx)
		}
		return nil
	}
	r.bcastHeartbeat(ctx)
	return nil
}

func (r *raft) refuseReadIndex(from NodeID, ctx []byte) error {
	err := fmt.Errorf("%w: %d read index requests pending (maxPendingReadIndex)", ErrProposalDropped, maxPendingReadIndex)
	if from != r.id {
		r.send(Message{To: from, Type: MsgReadIndexResp, Reject: true, Context: ctx})
	}
	return err
}

func (r *raft) respondReadIndex(from NodeID, index uint64, ctx []byte) {
	if from == r.id {
		r.readStates = append(r.readStates, ReadState{Index: index, RequestCtx: ctx})
		return
	}
	r.send(Message{To: from, Type: MsgReadIndexResp, Index: index, Context: ctx})
}

func (r *raft) releasePendingReadIndex() {
	waiting := r.pendingReadIndex
	r.pendingReadIndex = nil
	for _, w := range waiting {
		if err := r.serveReadIndex(w.from, w.ctx); err != nil {
			r.logger.Debug("raft: refusing queued read index", "from", w.from, "err", err)
		}
	}
}

// --- configuration -----------------------------------------------------------------------------

// checkConfChange reports whether the leader may append cc now.
func (r *raft) checkConfChange(cc ConfChange) error {
	if r.pendingConfIndex > r.log.applied {
		return fmt.Errorf("%w (entry %d not yet applied, applied %d)", ErrConfChangePending, r.pendingConfIndex, r.log.applied)
	}
	if _, err := applyConfChange(r.conf, cc); err != nil {
		return err
	}
	return nil
}

// applyConfEntry applies a committed configuration entry (in Advance, or while restarting).
func (r *raft) applyConfEntry(e *Entry) {
	if e.Index <= r.confIndex {
		return // already reflected (the bootstrap entry, or a snapshot that covers it)
	}
	cc, err := DecodeConfChange(e.Data)
	if err == nil {
		var n membership
		n, err = applyConfChange(r.conf, cc)
		if err == nil {
			r.setConf(n, e.Index)
			r.logger.Info("raft: applied configuration change", "index", e.Index, "conf", fmt.Sprintf("%+v", n.confState()))
			return
		}
	}
	// Every member decodes and checks the same entry against the same configuration, so every
	// member skips it alike; logging loudly is all that is left to do.
	r.confIndex = e.Index
	r.logger.Error("raft: skipping inapplicable configuration entry", "index", e.Index, "err", err)
}

func (r *raft) setConf(n membership, index uint64) {
	r.conf, r.confIndex = n, index
	r.syncProgress()
	if r.state != StateLeader {
		return
	}
	if r.leadTransferee != None && !sortedHas(n.voters, r.leadTransferee) {
		r.logger.Info("raft: aborting leadership transfer: transferee no longer a voter", "transferee", r.leadTransferee)
		r.leadTransferee = None
	}
	// Quorums changed: the commit index may move.
	if r.maybeCommit() {
		r.bcastAppend()
	}
	if !n.isVoter(r.id) {
		// Not a voter any more: lead until a voter takes over (leaving.go).
		r.startLeaving()
	}
}

// syncProgress creates progress for new members and drops it for removed ones.
func (r *raft) syncProgress() {
	r.memberIDs, r.voterIDs = r.conf.ids(), r.conf.voterIDs()
	ids := r.memberIDs
	for id := range r.prs {
		if !sortedHas(ids, id) {
			delete(r.prs, id)
		}
	}
	for _, id := range ids {
		pr := r.prs[id]
		if pr == nil {
			pr = newProgress(r.log.lastIndex()+1, r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes, false)
			// A new member gets an election timeout before check-quorum counts it as silent.
			pr.recentActive = true
			r.prs[id] = pr
		}
		pr.learner = sortedHas(r.conf.learners, id)
	}
}

// maybeAutoLeave proposes leaving a joint configuration entered with AutoLeave, once it is
// applied (dissertation §4.3: C_new is appended as soon as C_old,new is committed).
func (r *raft) maybeAutoLeave() {
	if r.state != StateLeader || !r.conf.joint() || !r.conf.autoLeave || r.pendingConfIndex > r.log.applied {
		return
	}
	// Bypasses the transfer and size checks: leaving is needed for progress and tiny.
	r.appendEntries(Entry{Type: EntryConfChange, Data: EncodeConfChange(ConfChange{})})
	r.pendingConfIndex = r.log.lastIndex()
	r.logger.Info("raft: leaving joint configuration automatically", "index", r.pendingConfIndex)
}

// --- local requests ----------------------------------------------------------------------------

var errEmptyProposal = errors.New("raft: propose: empty data is reserved for the leader's no-op entry")

func (r *raft) notLeader() error { return &NotLeaderError{Leader: r.lead, Term: r.term} }

func (r *raft) propose(data []byte) error {
	if len(data) == 0 {
		return errEmptyProposal
	}
	return r.proposeEntry(Entry{Type: EntryNormal, Data: data})
}

func (r *raft) proposeEntry(e Entry) error {
	switch r.state {
	case StateLeader:
		if err := r.proposeEntries([]Entry{e}); err != nil {
			return err
		}
		return nil
	case StateFollower:
		if r.lead == None || r.cfg.DisableProposalForwarding {
			return r.notLeader()
		}
		r.send(Message{To: r.lead, Type: MsgProp, Entries: []Entry{e}})
		return nil
	}
	return r.notLeader()
}

func (r *raft) proposeConfChange(cc ConfChange) error {
	if r.state == StateLeader {
		if err := r.checkConfChange(cc); err != nil {
			return err
		}
		if err := r.proposeEntries([]Entry{{Type: EntryConfChange, Data: EncodeConfChange(cc)}}); err != nil {
			return err
		}
		r.pendingConfIndex = r.log.lastIndex()
		return nil
	}
	// The leader checks the change against its configuration; the limits can be checked here.
	if err := checkConfChangeLimits(cc); err != nil {
		return err
	}
	return r.proposeEntry(Entry{Type: EntryConfChange, Data: EncodeConfChange(cc)})
}

func (r *raft) readIndex(ctx []byte) error {
	if len(ctx) == 0 {
		return errors.New("raft: read index: empty context (it identifies the request)")
	}
	switch r.state {
	case StateLeader:
		return r.handleReadIndex(r.id, ctx)
	case StateFollower:
		if r.lead == None {
			return r.notLeader()
		}
		r.send(Message{To: r.lead, Type: MsgReadIndex, Context: ctx})
		return nil
	}
	return r.notLeader()
}

func (r *raft) transferLeadership(to NodeID) error {
	switch r.state {
	case StateLeader:
		return r.handleTransferLeader(to)
	case StateFollower:
		if r.lead == None {
			return r.notLeader()
		}
		// MsgTransferLeader names the transferee in From (see MessageType).
		r.send(Message{To: r.lead, From: to, Type: MsgTransferLeader})
		return nil
	}
	return r.notLeader()
}

func (r *raft) campaign() error {
	if r.state == StateLeader {
		return nil
	}
	if !r.promotable() {
		return fmt.Errorf("raft: campaign: node %d is not a voter", r.id)
	}
	if r.hasUnappliedConfChanges() {
		return fmt.Errorf("raft: campaign: committed configuration changes up to %d are not yet applied (applied %d)", r.log.committed, r.log.applied)
	}
	r.campaignNow(r.defaultCampaign())
	return nil
}

// --- Ready / Advance ---------------------------------------------------------------------------

// applyUpTo is the last index that may be handed to the state machine.
func (r *raft) applyUpTo() uint64 {
	if r.cfg.Bugs.ApplyBeforeCommit {
		return r.log.lastIndex() // planted bug: hand out entries before they commit
	}
	return r.log.committed
}

func (r *raft) hasNextCommitted() bool {
	lo := max(r.log.applied+1, r.log.firstIndex())
	if r.log.pendingSnap != nil {
		lo = max(lo, r.log.pendingSnap.Meta.Index+1)
	}
	return lo <= r.applyUpTo()
}

func (r *raft) hasReady() bool {
	return (r.needBcast && r.state == StateLeader) ||
		len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 || len(r.selfAfterPersist) > 0 ||
		len(r.readStates) > 0 || r.log.pendingSnap != nil || r.log.stable < r.log.lastIndex() ||
		r.softState() != r.prevSoft || r.hardState() != r.prevHard || r.hasNextCommitted()
}

func (r *raft) ready() Ready {
	r.flushAppends()
	rd := Ready{
		Entries:              r.log.unstableEntries(),
		CommittedEntries:     r.log.nextCommitted(r.applyUpTo(), maxCommittedBytesPerReady),
		Messages:             r.msgs,
		MessagesAfterPersist: r.msgsAfterPersist,
		ReadStates:           r.readStates,
	}
	if ss := r.softState(); ss != r.prevSoft {
		rd.SoftState = &ss
	}
	if hs := r.hardState(); hs != r.prevHard {
		rd.HardState = hs
	}
	if r.log.pendingSnap != nil {
		s := *r.log.pendingSnap
		rd.Snapshot = &s
	}
	termOrVote := !rd.HardState.IsEmpty() && (rd.HardState.Term != r.prevHard.Term || rd.HardState.Vote != r.prevHard.Vote)
	rd.MustSync = len(rd.Entries) > 0 || rd.Snapshot != nil || termOrVote
	if r.cfg.DeferLeaderSync {
		switch {
		case r.state == StateLeader && len(rd.Entries) > 0 && rd.Entries[0].Term == r.term && rd.Snapshot == nil && !termOrVote:
			// Only this term's own appends: the leader's copy is one vote, counted once
			// LeaderSynced reports it.
			rd.MustSync = false
		case r.state != StateLeader && r.log.durable < r.log.stable:
			// A former leader's unsynced writes must be durable before it acknowledges or
			// votes on the strength of its log.
			rd.MustSync = true
		}
	}
	return rd
}

// deferredWrite reports whether rd is a leader's write whose sync the driver may defer.
func deferredWrite(rd *Ready) bool { return !rd.MustSync && len(rd.Entries) > 0 }

// leaderSynced counts the leader's own copy of its log up to index as durable.
func (r *raft) leaderSynced(term, index uint64) {
	if !r.cfg.DeferLeaderSync || r.state != StateLeader || term != r.term {
		// A report from an earlier leadership: the log may have changed since the write it
		// covers, and any later Ready that mattered synced it anyway.
		return
	}
	index = min(index, r.log.stable)
	if index <= r.log.durable {
		return
	}
	r.log.durable = index
	if err := r.step(Message{Type: MsgAppResp, From: r.id, To: r.id, Term: r.term, Index: index}); err != nil {
		panic(fmt.Sprintf("raft: stepping own sync report: %v", err))
	}
}

func (r *raft) quorumNeedsLeader() bool {
	if !r.conf.isVoter(r.id) {
		return false // a leaving leader's copy counts in no quorum
	}
	for _, voters := range [][]NodeID{r.conf.voters, r.conf.outgoing} {
		if len(voters) == 0 {
			continue
		}
		// Only followers the leader is streaming to count: one it probes (unreachable, or
		// rejecting) or sends a snapshot will not acknowledge new entries soon.
		others := 0
		for _, id := range voters {
			if pr := r.prs[id]; id != r.id && pr != nil && pr.state == ProgressReplicate {
				others++
			}
		}
		if others < len(voters)/2+1 {
			return true
		}
	}
	return false
}

// commitWaitsOnLeaderSync reports whether some appended entry would commit if the leader's own
// copy were synced: the quorum counts the leader, and the leader has not synced it.
func (r *raft) commitWaitsOnLeaderSync() bool {
	if r.state != StateLeader || r.log.durable >= r.log.stable || !r.conf.isVoter(r.id) {
		return false
	}
	last := r.log.stable
	mci := jointCommitted(r.conf.voters, r.conf.outgoing, func(id NodeID) uint64 {
		if id == r.id {
			return last
		}
		if pr := r.prs[id]; pr != nil {
			return pr.match
		}
		return 0
	})
	return mci != ^uint64(0) && mci > r.log.committed
}

func (r *raft) advance(rd Ready) {
	// Clear first: applying configuration and stepping our own acknowledgements below may queue
	// new messages for the next Ready.
	r.msgs, r.msgsAfterPersist, r.readStates = nil, nil, nil
	self := r.selfAfterPersist
	r.selfAfterPersist = nil

	if rd.SoftState != nil {
		r.prevSoft = *rd.SoftState
	}
	if !rd.HardState.IsEmpty() {
		r.prevHard = rd.HardState
	}
	if rd.Snapshot != nil && r.log.pendingSnap != nil && r.log.pendingSnap.Meta.Index == rd.Snapshot.Meta.Index {
		r.log.pendingSnap = nil
		r.log.applied = max(r.log.applied, rd.Snapshot.Meta.Index)
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		if r.log.matchTerm(last.Index, last.Term) {
			r.log.stable = max(r.log.stable, last.Index)
		}
	}
	deferred := deferredWrite(&rd)
	if rd.MustSync {
		r.log.durable = r.log.stable // a sync makes everything written before it durable
	}
	for i := range rd.CommittedEntries {
		e := &rd.CommittedEntries[i]
		if e.Index <= r.log.applied {
			continue
		}
		if e.Index != r.log.applied+1 {
			panic(fmt.Sprintf("raft: applied entry %d out of order (applied %d)", e.Index, r.log.applied))
		}
		r.log.applied = e.Index
		if e.Type == EntryConfChange {
			r.applyConfEntry(e)
		}
	}
	if r.state == StateLeader {
		r.reduceUncommittedSize(rd.CommittedEntries)
	}
	for _, m := range self {
		if deferred && m.Type == MsgAppResp {
			continue // not synced yet: LeaderSynced steps it
		}
		if err := r.step(m); err != nil {
			panic(fmt.Sprintf("raft: stepping own %v: %v", m.Type, err))
		}
	}
	r.maybeAutoLeave()
	r.maybeDeferredTransfer()
}

// --- snapshots and status ----------------------------------------------------------------------

func (r *raft) compact(snap Snapshot) error {
	if len(snap.Meta.ConfState.Voters) == 0 {
		// The state machine may not track membership; the core knows it if nothing was applied
		// after the snapshot point.
		if snap.Meta.Index != r.log.applied || r.confIndex > snap.Meta.Index {
			return fmt.Errorf("raft: compact to %d: snapshot without ConfState (allowed only at the applied index %d)", snap.Meta.Index, r.log.applied)
		}
		snap.Meta.ConfState = r.conf.confState()
	}
	if _, err := membershipFromConfState(snap.Meta.ConfState); err != nil {
		return fmt.Errorf("raft: compact to %d: %w", snap.Meta.Index, err)
	}
	if err := r.log.compact(snap); err != nil {
		return err
	}
	r.logger.Debug("raft: compacted log", "index", snap.Meta.Index, "term", snap.Meta.Term)
	return nil
}

func (r *raft) status() Status {
	s := Status{
		ID:             r.id,
		HardState:      HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed},
		SoftState:      r.softState(),
		Applied:        r.log.applied,
		LastIndex:      r.log.lastIndex(),
		FirstIndex:     r.log.firstIndex(),
		ConfState:      r.conf.confState(),
		LeadTransferee: r.leadTransferee,
	}
	if r.state == StateLeader {
		s.Progress = make(map[NodeID]PeerProgress, len(r.prs))
		for id, pr := range r.prs {
			s.Progress[id] = PeerProgress{
				Match:        pr.match,
				Next:         pr.next,
				State:        pr.state,
				RecentActive: pr.recentActive,
				Learner:      pr.learner,
				Inflight:     pr.inflights.count,
			}
		}
	}
	return s
}
