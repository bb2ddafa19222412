// Package raft is caucus's Raft consensus core: a pure, deterministic state machine.
//
// The core has no goroutines, no clock, no sockets, no disk and no global randomness. Time is a
// call to Tick; the network is Step (messages in) and Ready.Messages (messages out); the disk is
// Ready.Entries and Ready.HardState (to persist) and PersistentState (to restart from);
// randomness comes from Config.Seed. The same inputs in the same order always produce the same
// outputs, which is what lets internal/sim replay a whole cluster from one seed.
//
// # The contract
//
// The caller owns one *Node per member and drives it from a single goroutine:
//
//  1. Create it with New(cfg, state): state is what was durable before a restart (empty on a
//     brand-new node; Config.InitialVoters bootstraps a new cluster).
//  2. Feed it inputs: Tick() at a fixed interval; Step(m) for each message received from a peer;
//     Propose, ProposeConfChange, ReadIndex, TransferLeadership and Campaign for local requests.
//  3. When HasReady() is true, take rd := Ready() and handle it as documented on Ready: send
//     Messages; persist HardState, Snapshot and Entries (fsync if MustSync); send
//     MessagesAfterPersist; install Snapshot and apply CommittedEntries in order; then
//     Advance(rd). No other call may come between Ready and Advance.
//  4. After the state machine has captured a snapshot at an applied index, hand it to the core
//     with Compact so that log entries before it can be dropped and lagging followers can be
//     sent that snapshot.
//
// Invariants the core keeps (checked by internal/sim on every step): at most one leader per term;
// a vote is never sent before the HardState recording it is persisted; an entry is handed out in
// CommittedEntries only once committed, exactly once per index, in index order; the leader only
// commits entries of its current term by counting replicas (paper 5.4.2).
//
// # Where the core departs from the paper
//
//   - The log of entries after the latest snapshot is held in memory by the core itself; the
//     caller persists it (the WAL) but the core never reads it back except through New.
//   - Configuration changes take effect when applied (as etcd's library), not when appended
//     (dissertation 4.1); a leader accepts a new change only once the previous one is applied and
//     an entry of its own term has committed (the dissertation 4.1.1 fix).
//   - A leader that applies a configuration in which it is not a voter (its removal or demotion)
//     does not step down (dissertation 4.2.2 has it step down once that configuration is
//     committed, having managed a cluster it is not part of until then; etcd's library leads on
//     by default): it leads until a voter replaces it, so that every member learns the commit
//     index from it. Stepping down at once could stall a cluster for
//     good: after leaving a joint configuration whose incoming half it is not in, if the
//     announcement of that commit was lost and it had appended entries after it, the others,
//     still joint, need its vote, which its longer log refuses, and as a non-voter it never
//     campaigns. Meanwhile it counts itself in no quorum, refuses proposals (ErrLeaderLeaving),
//     confirms reads by a quorum round only, steps down by check-quorum like any leader, and
//     transfers leadership to the voter with the highest match once its log is committed,
//     trying another voter each time a transfer times out (leaving.go).
//   - A refused vote or pre-vote carries the refuser's commit index and the term of its entry
//     there; a candidate holding that entry adopts the index (by Log Matching its log is the
//     same up to there, all of it committed), and gives its campaign up if that commits a
//     configuration change it has yet to apply. Raft spreads the commit index from the leader
//     only, and a leaving leader deposed by check-quorum before the others learned that it
//     left a joint configuration would otherwise leave them needing the outgoing half's votes,
//     which the learners it made refuse while their logs are longer.
//   - A follower that receives MsgTimeoutNow while committed configuration changes are not yet
//     applied campaigns as soon as it has applied them (within an election timeout), instead of
//     ignoring the request: a transferee often learns that a change committed in the same batch
//     of messages as the request, and it may not campaign before it knows whether it is still
//     a voter.
//   - Snapshots travel in chunks of MaxSnapshotChunkBytes, each acknowledged by the follower
//     (MsgSnapResp) before the next is sent. A chunk without an acknowledgement for two heartbeat
//     intervals is resent, then after four, eight...; a transfer without progress for an election timeout starts over, and
//     the follower's answer to its first chunk says how much of the same snapshot it already
//     holds (same leader and term), so it resumes there; one interrupted by a leader change
//     starts over from the first byte. The follower buffers at most
//     MaxSnapshotBytes and acknowledges the whole snapshot with an MsgAppResp sent after persisting
//     it (MessagesAfterPersist). A leader's snapshot may be held outside the core (Snapshot with
//     nil Data and a Size): its chunks then carry a Length, and the caller fills their Data from
//     its own copy before sending, so the core never holds a large image in memory.
//   - The candidate's own vote and the leader's own append acknowledgement are messages to self
//     that never leave the core: they are held until Advance confirms that the Ready recording
//     them was persisted, then stepped like anyone else's. So a candidate wins and a leader commits
//     only with its own state durable (dissertation 10.2.1: the leader's disk write runs in
//     parallel with replication but still counts toward the quorum).
//   - With DeferLeaderSync the leader does not wait for its own sync at all: a Ready holding
//     only the leader's new entries of its term has MustSync false, the caller writes them and
//     syncs when it chooses, and LeaderSynced(term, index) then steps the acknowledgement. Until
//     then the entries commit only on a quorum of the other voters' durable copies, which is all
//     the safety argument of 10.2.1 needs. Reports from an earlier term are ignored, because a
//     log may change only through a term change, and a member that stops leading with unsynced
//     writes gets MustSync on its next Ready, so it never acknowledges or votes on unsynced
//     entries. CommitWaitsOnLeaderSync and QuorumNeedsLeader tell the caller when waiting longer
//     would delay a commit.
//   - Appends are sent when the caller takes a Ready, not on each Propose, so proposals made in
//     between travel in one MsgApp per follower (bounded by MaxMsgBytes) — batching without a
//     timer.
//   - With DeferCommitBroadcast a leader whose commit index moves does not send an append just
//     to say so (the paper's leader includes it in its next AppendEntries; etcd's library sends
//     one at once): it rides on the next append or heartbeat, or goes out when the caller calls
//     BroadcastCommit (CommitUnannounced says one is owed). Only how soon idle followers apply
//     depends on it; safety never does.
//   - A follower adopting a higher term from a vote request it does not grant keeps its election
//     timer running (Figure 2 resets it only on granting a vote); otherwise a candidate with a
//     stale log could postpone every election that could succeed.
//   - A node always answers an append or heartbeat from a stale term with its own term (etcd only
//     does with pre-vote or check-quorum), so that a learner stranded in a higher term is not
//     ignored forever by a leader that never hears of that term.
//   - With pre-vote, a node within its leader's lease ignores pre-votes even without check-quorum
//     (dissertation 9.6); real votes are ignored within the lease only with check-quorum.
//   - A lease-based read (ReadOnlyLeaseBased) during a leadership transfer falls back to a quorum
//     round: the transferee's campaign bypasses the lease, so the lease no longer proves that no
//     other leader exists.
//   - On the last snapshot chunk the follower checks again whether its log already contains the
//     snapshot's last entry (paper 7, InstallSnapshot step 6): a delayed append may have brought
//     it past the snapshot meanwhile, and the leader may count those entries as matched.
//   - Forwarded requests (MsgProp, MsgReadIndex) carry Term 0: they address whoever leads and take
//     no part in the term protocol.
//   - Empty proposals are refused: an EntryNormal with empty Data is the leader's no-op.
//   - Several changes applied to an empty configuration (the bootstrap entry, or a joining node
//     applying it) take effect directly: there is no old majority to overlap with.
//   - With a planted bug active (Config.Bugs) the core tolerates the states the bug produces (a
//     committed entry overwritten, a commit index beyond the log) instead of panicking, so that
//     the simulator's checkers see the damage.
//
// # Replication flow control
//
// The leader tracks each follower in one of three Progress states (see ProgressState and the
// progress type): probe (position unknown: one append at a time, moved back by the follower's
// conflict hint on rejection), replicate (position known: appends pipelined within
// MaxInflightMsgs/MaxInflightBytes) and snapshot (the follower needs the snapshot: chunks only).
// A heartbeat response reopens a paused probe, and frees one slot of a full replicate window so
// that lost appends cannot stall a live follower forever.
//
// # Limits
//
// MaxMsgBytes, MaxInflightMsgs, MaxInflightBytes, MaxUncommittedEntriesBytes,
// MaxSnapshotChunkBytes and MaxSnapshotBytes are configured (Config). Fixed limits:
// MaxConfChanges and MaxConfChangeContextBytes (one ConfChange), maxPendingReadIndex (ReadIndex
// requests a leader holds; beyond it they are refused) and maxCommittedBytesPerReady (entry bytes
// in one Ready.CommittedEntries, at least one entry).
package raft
