package raft

// Node is one member's consensus core. See the package doc for the contract. It is not safe for
// concurrent use.
type Node struct {
	r *raft
}

// New creates a node from its configuration and what it had persisted before (empty for a new
// node). It fails on an invalid Config or an inconsistent PersistentState (entries not contiguous
// with the snapshot, a commit index beyond the last entry).
func New(cfg Config, state PersistentState) (*Node, error) {
	r, err := newRaft(cfg, state)
	if err != nil {
		return nil, err
	}
	return &Node{r: r}, nil
}

// Tick advances the node's logical clock by one tick.
func (n *Node) Tick() { n.r.tick() }

// Step feeds a message received from a peer. Messages from stale terms are ignored; a message
// addressed to another node is an error.
func (n *Node) Step(m Message) error { return n.r.step(m) }

// Propose appends data to the log if this node leads, forwards it to the leader if it follows
// and forwarding is enabled, and otherwise fails with *NotLeaderError or ErrProposalDropped.
// Success only means the proposal was accepted for replication; it commits when it appears in
// Ready.CommittedEntries. Empty data is refused: an empty EntryNormal is the leader's no-op.
func (n *Node) Propose(data []byte) error { return n.r.propose(data) }

// ProposeAt is Propose that also says where the entry went: on the leader, the index and term
// it was appended at. The entry commits there or nowhere: once another entry commits at that
// index, the proposal can never be applied. It returns 0, 0 when the proposal was forwarded to
// the leader.
func (n *Node) ProposeAt(data []byte) (index, term uint64, err error) {
	if err := n.r.propose(data); err != nil {
		return 0, 0, err
	}
	if n.r.state != StateLeader {
		return 0, 0, nil
	}
	return n.r.log.lastIndex(), n.r.term, nil
}

// ProposeConfChange proposes a membership change (see ConfChange).
func (n *Node) ProposeConfChange(cc ConfChange) error { return n.r.proposeConfChange(cc) }

// ReadIndex requests a linearizable read index. The answer arrives later in Ready.ReadStates with
// the same ctx (which must be non-empty and unique among outstanding requests). A follower forwards
// the request to the leader; without a leader the request fails with *NotLeaderError. A request
// the leader cannot serve is dropped (the caller times out and retries); a leader change drops
// pending requests too.
func (n *Node) ReadIndex(ctx []byte) error { return n.r.readIndex(ctx) }

// TransferLeadership asks the leader to hand leadership to the given voter (dissertation 3.10).
func (n *Node) TransferLeadership(to NodeID) error { return n.r.transferLeadership(to) }

// Campaign makes the node start an election now (with pre-vote if enabled).
func (n *Node) Campaign() error { return n.r.campaign() }

// CommitUnannounced reports whether, with Config.DeferCommitBroadcast, the leader owes some
// follower its commit index. The driver should call BroadcastCommit soon after.
func (n *Node) CommitUnannounced() bool { return n.r.commitUnannounced() }

// BroadcastCommit sends the commit index to the followers that have not heard of it (see
// Config.DeferCommitBroadcast). It is a no-op on a follower or when nothing is owed.
func (n *Node) BroadcastCommit() { n.r.broadcastCommit() }

// LeaderSynced reports that, under Config.DeferLeaderSync, the leader's log is durable up to
// index: an fsync that began after the entries through index (appended in term) were written
// has completed. Reports from an earlier term or leadership are ignored. Call it outside
// Ready/Advance.
func (n *Node) LeaderSynced(term, index uint64) { n.r.leaderSynced(term, index) }

// CommitWaitsOnLeaderSync reports whether, under Config.DeferLeaderSync, an appended entry would
// commit once the leader's own copy is synced (a quorum needs it). The driver should then sync
// soon rather than wait for another follower.
func (n *Node) CommitWaitsOnLeaderSync() bool { return n.r.commitWaitsOnLeaderSync() }

// QuorumNeedsLeader reports whether the followers the leader is streaming entries to (those in
// ProgressReplicate) cannot form a quorum without the leader's own vote: one or two voters, a
// follower that is down or catching up, or a joint configuration with such a half. Under
// Config.DeferLeaderSync the driver should then sync every write at once.
func (n *Node) QuorumNeedsLeader() bool { return n.r.quorumNeedsLeader() }

// HasReady reports whether Ready would return anything to do.
func (n *Node) HasReady() bool { return n.r.hasReady() }

// Ready returns what the caller must persist, send and apply. See Ready for the order.
func (n *Node) Ready() Ready { return n.r.ready() }

// Advance tells the node that everything in rd was done.
func (n *Node) Advance(rd Ready) { n.r.advance(rd) }

// Compact records that the state machine has captured snap (at an applied index) and drops the
// log entries it covers. Lagging followers are sent snap from then on. snap.Meta.Term must be the
// term of the entry at snap.Meta.Index; an empty snap.Meta.ConfState is filled in with the current
// configuration when snap.Meta.Index is the applied index (otherwise it is an error). It fails
// with ErrSnapshotOutOfDate for a snapshot not newer than the current one.
func (n *Node) Compact(snap Snapshot) error { return n.r.compact(snap) }

// ReportUnreachable tells the leader that a message to id could not be delivered, so it stops
// pipelining to id and probes instead.
func (n *Node) ReportUnreachable(id NodeID) { n.r.reportUnreachable(id) }

// Status returns a copy of the node's state.
func (n *Node) Status() Status { return n.r.status() }
