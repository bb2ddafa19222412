// Package node runs one caucus member's consensus: it drives the pure Raft core (package raft)
// with time (real, or the simulator's), a durable log, a snapshot store and a peer transport,
// and hands committed
// entries to a StateMachine (statemachine.go states the contract). It knows nothing of what an
// entry means: the application (internal/fsm) encodes proposals, decodes entries, and returns
// the results the node hands to the waiting proposers. Proposals carry an id the application
// puts in its entry (NextProposalID), and the state machine's membership tells the node which
// peers to reach (Peers).
//
// # The loop
//
// One goroutine owns the *raft.Node. It waits for a tick, a peer message, a proposal, a read or a
// membership request, drains every other input already queued (this is where batching comes
// from: all proposals that arrived during the previous fsync go into one append and one fsync),
// then handles Ready in the order the raft package documents:
//
//  1. send Ready.Messages (the leader replicates while it writes its own log);
//  2. persist HardState and Entries to the log store, with one fsync if MustSync (a HardState
//     that only moves the commit index waits for the next write); persist and install an
//     incoming snapshot;
//  3. send Ready.MessagesAfterPersist (votes and append acknowledgements);
//  4. hand CommittedEntries to the state machine (StateMachine.Apply: pending, uncommitted
//     state), and wake the requests waiting on them; release reads whose read index is now
//     committed to the state machine;
//  5. Advance.
//
// On the leader, step 4 moves before step 2 when every committed entry was persisted by an
// earlier Ready (its usual case under load; see applyBeforePersist): the answers leave while the
// disk works. A follower keeps the order, because its acknowledgement is on the commit's path.
//
// A leader does not send an append just to announce a new commit index
// (raft.Config.DeferCommitBroadcast): the next append or heartbeat carries it, and if none has
// within CommitBroadcastDelay (1 ms) a timer of the loop sends it.
//
// With Config.LeaderSyncDelay set, a leader does not fsync its own appends in the loop either
// (raft.Config.DeferLeaderSync): they commit on the followers' durable copies, and a background
// goroutine syncs the leader's log when a commit would wait on it, or at the latest
// maxLeaderSyncLag after the write. It pays only when the members' logs share one disk
// (leadersync.go has the policy and the measurements); by default the leader syncs inline.
//
// Applied entries are committed to the state machine in groups (see DefaultApplyCommitInterval),
// and snapshots are serialized and saved by a background goroutine from a read view opened in the
// loop at the applied index; the loop only records the finished snapshot in the WAL and compacts.
// No snapshot is ever whole in memory: the Raft core holds its metadata and size, the leader
// reads chunks from the snapshot file when a follower needs them, and a follower writes received
// chunks into a file and installs from it (snaprecv.go). Maintenance that must not overlap
// applying (defragmenting the state machine file) runs on the loop too (Exclusive).
//
// # Time, background work and the simulator
//
// The loop reads time and arms its timers (the tick, group commit, commit broadcast, leader
// sync) only through Config.Time, a Clock, and hands its background work to Config.Executor;
// both default to the real thing (clock.go, drive.go). The deterministic simulator
// (internal/sim) gives each member simulated ones and runs the loop from its own goroutine
// through a Driver, one input at a time, with the very code run uses after each input. It opens
// members with OpenFS: the log and snapshots on a simulated disk, and its own StateMachine.
// DriverBugs plants driver bugs for its tests.
//
// # Invariants
//
//   - A vote or an append acknowledgement never leaves this member before the state it
//     acknowledges is durable (step 2 completes before step 3).
//   - A write is acknowledged to a client only after the entry carrying it has been applied on the
//     member that proposed it, which implies it is committed.
//   - A write that fails is failed as certainly not applied (ProposalLost) only when another
//     entry committed at the index this member appended it at. Otherwise its outcome is unknown:
//     its deadline passed, or, for a write a follower forwarded, the leadership changed (a
//     leader may drop a forwarded write without a word, so the follower does not wait for the
//     deadline).
//   - A linearizable read is answered only once this member has applied, and committed to the
//     state machine, a read index confirmed by a quorum (dissertation 6.4), so it reflects every
//     acknowledged write.
//   - The state machine sees every committed index once, in order, starting right after the
//     index it had applied when the node opened it (the node checks this, and stops on a gap);
//     it records its applied index atomically with its data, so replaying the log after a
//     crash is harmless.
//   - A persistence error (disk full, I/O error), including one storing a received snapshot
//     chunk, stops the member: continuing could acknowledge state that is not durable. The error
//     is kept and reported by Err and Status.
//   - The snapshot and the log are the source of truth; the state machine is derived. A state
//     machine that opens behind the newest snapshot (one the application rebuilt: see
//     internal/fsm/unsynced.go) is restored from it, and the log after it is replayed.
//   - One process at a time writes a log (an flock on LOCK in the log directory, which may be
//     outside the data directory: OpenConfig.WALDir), and a member never starts with an empty
//     log beside a state machine that applied entries: that log lost the member's vote.
package node
