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
// # Storage layout (schema 4)
//
// bbolt buckets:
//
//	meta      schema version, revision, compacted revision, applied index, apply clock,
//	          replicated settings (logpb.Settings),
//	          session and lease counts, physical compaction position
//	history   rev sub -> flags, create, version, lease, key, value (every version, in revision order)
//	lease     id -> ttl, deadline
//	leaseexp  deadline id -> ""          (leases ordered by deadline, for ExpiredLeases)
//	leasekey  id key -> ""               (keys attached to a lease)
//	session   client_id -> sequence, last use, stored result
//	sesslru   last use client_id -> ""   (sessions ordered by last use, for expiry and eviction)
//	idemkey   idempotency key -> request fingerprint, applied at, stored result (idempotency.go)
//	idemexp   applied at key -> ""       (idempotency keys ordered by age, for expiry)
//	member    id -> logpb.Member
//	events    rev index -> logpb.Event             (events.go: the stream, from the events floor)
//	topics    topic -> retained events, last revision
//	evsize    rev -> bytes and events published before and through rev (retention's measure)
//	consumer  name -> logpb.ConsumerRecord         (consumer.go: durable consumers)
//	cpending  name 0 rev index -> attempt, deadline, key   (deliveries awaiting an ack, and
//	          events waiting behind an earlier event of their key)
//	ckeys     name 0 len key rev index -> ""       (each key's pending events, in order)
//	cready    name 0 deadline rev index -> ""     (what a fetch may hand out, by deadline)
//	cfloor    ack_floor_rev name -> ""             (consumers that hold events, by ack floor)
//
// The meta bucket also holds the events floor (events below it are gone), the bytes and events
// ever published, and the topic, consumer and idempotency key counts.
//
// and in memory, the key index (index.go): a B-tree from each key that has a stored version to
// the revisions of its stored versions (oldest first, tombstones flagged) and the create
// revision, version and lease of the newest one. It is rebuilt from the history bucket at Open
// and Restore (the file is the whole state: a snapshot is the file, WriteTo), about 1.5 s per
// million keys (BenchmarkOpenLargeKeyspace).
//
// Revisions only grow, so every write appends to the history bucket's last page (etcd's layout):
// a put dirties the same page as the put before it, and finds the previous version's fields in
// the index without reading the file. A point read or a range asks the index which revision of
// each key is visible at the read revision and fetches those records; count-only reads, and
// the count past a range's limit, use the index alone. The history bucket is also the change
// feed (Changes) and what physical compaction walks. Schemas 1 to 3 kept versions keyed by key
// (esc(key) ^rev ^sub), so that a put wrote one record into a random leaf of a large tree; Open
// migrates a schema 2 or 3 file, including a snapshot received from a member of that release,
// and refuses a newer schema.
//
// The index costs 64 bytes per key in one allocation (the newest version is inline), its key
// and its B-tree slot: some 99 bytes per 16-byte key with one version (TestIndexMemory); the
// older versions of a key live in a slice of their own, about 28 bytes per extra version
// measured. Linear in keys and versions.
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
//   - At every commit the key index lists exactly the versions of the history bucket, with the
//     newest version's fields; leasekey holds exactly the live keys with a lease (those whose
//     newest version is not a tombstone). Revisions only grow: a committed revision is never
//     reused, even after compaction.
//   - Sessions: a sessioned write is applied at most once while its session is remembered, and a
//     session is never forgotten less than Limits.SessionRetryWindow after its last use (a full
//     table refuses new sessions instead). A write of a forgotten session is refused unless it
//     is the client's first (sequence 1); session.go states the timing assumption under which
//     that first write cannot be applied twice either.
//   - Idempotency keys: a write named by a key is applied at most once within
//     Limits.IdempotencyRetention of its application (a full table refuses new keys; none is
//     forgotten early); a different request with the key is refused; a refused write leaves its
//     key free (idempotency.go).
//   - Consumers: a delivery, its attempt and its deadline are recorded by the fetch command,
//     with the command's time; positions (next, delivered, ack floor) never go back; only the
//     head of a key's pending events is ever delivered; an acknowledged event is never
//     delivered again; events at or after the ack floor of a consumer that is not stalled are
//     never removed (consumer_retention.go states when a consumer is stalled).
//     Store.ConsumerProgress exposes the committed record and pending events, so that the
//     simulator (internal/sim) checks these invariants on every member.
//   - Within one transaction a key is written at most once (etcd's duplicate-key rule), so every
//     write of a command sees the pre-command state as its previous version.
//
// # Concurrency
//
// One Batch (one bbolt read-write transaction) at a time applies commands; any number of readers
// run concurrently in bbolt read transactions and see only committed batches. The Batch is the
// key index's only writer: it changes the index under its lock as it applies, so the index may
// hold revisions of the open batch. The invariant that makes this safe: a reader only considers
// revisions at or below the revision of its own bbolt transaction, and every such revision's
// record is in that transaction, except those compaction removed, which the index keeps until
// the removing batch has committed. A batch that does not commit takes its revisions back out
// of the index. A reader whose transaction predates a compaction the index has applied (the
// index's compacted revision is above the transaction's) starts over on a new transaction.
// Restore and Defragment swap the file (and Restore the index) under the exclusive lock; no
// Batch may be open then.
package mvcc
