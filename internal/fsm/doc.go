// Package fsm is caucus's replicated application: the state machine that internal/node feeds
// with committed Raft entries (it implements node.StateMachine), the proposals made on this
// member's behalf, and the chores only the leader runs.
//
// # Shape
//
// The node drives Raft, persists the log and snapshots, and talks to peers; it knows nothing of
// what an entry means. This package decodes entries in its own log format (internal/logpb),
// applies them to the key-value store (internal/mvcc) one concern at a time, and answers the
// proposals this member made:
//
//	entry ── node ──► FSM.Apply ─┬─ normal entry: format version check, then the applier of its
//	                             │    kind, run inside mvcc.Batch.ApplyOp (apply.go): keys.go,
//	                             │    events.go, consumers.go, leases.go, compaction.go,
//	                             │    members.go, settings.go
//	                             └─ configuration change: the membership table (members.go)
//
// ApplyOp does what every command shares: the exactly-once session check and record (the
// session table lives in the store, in the same transaction as the data), validation against
// the replicated limits, and the revision the command's writes take.
//
// Durable consumers (consumers.go) are state machine state like keys: a fetch is a command, so
// which events it hands out, their attempts and deadlines (the command's time plus the ack
// wait) are decided in the log, the same on every member, and survive leader changes. Nothing
// in this package keeps consumer state in memory.
//
// The walk goes one way: the node calls the FSM, the FSM calls mvcc; nothing calls back up.
// What the node needs back (the peers' addresses after a membership change, the results of
// this member's proposals) is returned from Apply or read from the committed state.
//
// Proposals go the other way through the same node: Proposer stamps a command with its id,
// proposer, time and log format version, and waits for the result Apply returns for it.
// Chores (chores.go) run on the leader: lease expiry, automatic compaction, the member's own
// attributes (client URLs, the log format it applies, its gossip address once every member
// applies log format version 4), and the initial replicated settings
// of a new cluster. They propose through the node like any client, so every member applies
// their effect from the log.
//
// # Invariants
//
//   - Determinism: applying the same entries to the same state gives the same state and results
//     on every member. Time comes from the command (stamped by the proposer), limits from the
//     replicated settings (mvcc/settings.go), never from local flags or clocks.
//   - A member never applies an entry of a log format version it does not know: Apply fails
//     with an error naming the version needed (logpb.UnknownVersionError), the node stops, and
//     the log keeps the entry for a release that knows it. A command of a newer version is
//     proposed only once every member has published that it applies that version.
//   - Applying is idempotent by index across crashes: the store records its applied index in the
//     same transaction as the data; the node never hands an index twice within a run.
//   - A configuration change is committed to the store on its own, before Apply returns, so
//     that the membership the node reads back (Peers) includes it.
//   - The state machine file is derived state: a file that may have lost unsynced pages (a
//     reboot, unsynced.go) or that bbolt cannot open is moved aside at Open, and the node
//     rebuilds it from the snapshot and the log.
package fsm
