// Package mvcc is caucus's key-value store: a multi-version key-value store kept in a bbolt
// file, fed with the committed commands of the Raft log by the application (internal/fsm, which
// runs each command's operation inside Batch.ApplyOp) and read concurrently by the server.
//
// # Model
//
// The store has one cluster-wide revision (an int64, 1 in an empty store). Every applied command
// that changes at least one key takes the next revision; the writes of one command (the ops of a
// transaction, the keys deleted by a range delete or a lease revocation) share that revision and
// are told apart by a sub-revision. Each key version records create_revision, mod_revision,
// version and lease, exactly like etcd's mvcc. A delete writes a tombstone, so a read at a past
// revision sees the keys as they were. Compaction discards the versions that no read at or above
// the compaction revision can observe.
//
// # Storage layout (bbolt buckets)
//
//	meta      schema version, revision, compacted revision, applied index, apply clock,
//	          replicated settings (logpb.Settings),
//	          session and lease counts, physical compaction position
//	kv        esc(key) 0x00 0x01 ^rev ^sub -> version record (tombstone flag, create, version, lease, value)
//	rev       rev sub -> flag + key (the revision-ordered change log; compaction walks it)
//	lease     id -> ttl, deadline
//	leaseexp  deadline id -> ""          (leases ordered by deadline, for ExpiredLeases)
//	leasekey  id key -> ""               (keys attached to a lease)
//	session   client_id -> sequence, last use, stored result
//	sesslru   last use client_id -> ""   (sessions ordered by last use, for expiry and eviction)
//	member    id -> logpb.Member
//
// esc is an order-preserving, prefix-free escaping of the user key (0x00 becomes 0x00 0xFF), so
// a key's versions are adjacent in the kv bucket, newest first (revisions are stored inverted).
// The newest version of a key is the first entry under its prefix: a point read, and every
// write's lookup of the previous version, is one seek; a range visits each key's first entry
// and steps over the rest of its history (a long uncompacted one with a seek). A put writes one
// record into a B+tree leaf chosen by the key. Schema 2 also kept a "live marker" per key
// beside its versions, naming the newest live one; it was redundant with the newest-first
// order and cost a third seek and a second record per put, so schema 3 dropped it (Open
// deletes the markers of a schema 2 file in place). The version visible at a past revision R
// is a few cursor steps or one seek away. The rev bucket, in revision order, lets compaction
// touch only the revisions since the previous compaction, and feeds Events.
//
// # Invariants
//
//   - Determinism: the state after applying a sequence of commands depends only on those
//     commands and on the limits, which are replicated settings (settings.go; Options.Limits,
//     the release's defaults, only until the log sets them). Time comes from the command's
//     time_unix_nano, never from a local clock; iteration is always in key order.
//   - Atomicity: a command is validated completely before its first write, so a failing command
//     writes nothing, even though a whole batch of commands shares one bbolt transaction (bbolt
//     has no savepoints).
//   - Idempotence: the applied index is persisted in the same bbolt transaction as the data; a
//     command at an index at or below it is skipped, so the node can replay its WAL after a crash.
//   - The kv bucket holds only versions; the rev bucket indexes exactly the versions; leasekey
//     holds exactly the live keys with a lease (those whose newest version is not a tombstone). Revisions only grow: a revision is never reused, even after compaction.
//   - Sessions: a sessioned write is applied at most once while its session is remembered, and a
//     session is never forgotten less than Limits.SessionRetryWindow after its last use (a full
//     table refuses new sessions instead). A write of a forgotten session is refused unless it
//     is the client's first (sequence 1); session.go states the timing assumption under which
//     that first write cannot be applied twice either.
//   - Within one transaction a key is written at most once (etcd's duplicate-key rule), so every
//     write of a command sees the pre-command state as its previous version.
//
// # Concurrency
//
// One Batch (one bbolt read-write transaction) at a time applies commands; any number of readers
// run concurrently in bbolt read transactions and see only committed batches. Restore and
// Defragment swap the file under the exclusive lock; no Batch may be open then.
package mvcc
