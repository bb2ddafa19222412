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
//   - Snapshots travel in chunks of MaxSnapshotChunkBytes, each acknowledged by the follower.
package raft
