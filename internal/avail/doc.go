// Package avail is the member-local half of the available keyspaces: the store where a member
// accepts writes without consensus, and the anti-entropy that makes members converge. It does
// no networking: the server calls the store, and a peer transport moves deltas and session
// messages (later steps).
//
// # Store
//
// One bbolt file per member (not the Raft store kv.db, never in Raft snapshots). Each keyspace
// has a data bucket (key -> the crdt encoding of its state: a register, a PN-counter or an
// add-wins OR-set, whose first byte names the kind) and an index bucket (SHA-256(key)[:4] ||
// key -> the state's crdt.Digest) that orders keys by Merkle leaf. A keyspace's kind is fixed at
// creation, or KindAny, where a key's first write fixes its kind; an operation or merge of
// another kind fails with ErrKind.
//
// Local operations (Put, Delete, Incr, Decr, Add, Remove) take an Origin (member id, hlc.Clock,
// physical time) and return the Delta to replicate. MergeRemote and MergeRemoteBatch merge what
// a peer sent, a delta or a whole state, after validating its encoding and kind and passing a
// register's stamp through hlc.Clock.Update, which refuses stamps further ahead than the skew
// bound (hlc.ErrSkew). Get and Range read committed states; a register tombstone reads as
// ErrNotFound.
//
// Every write goes through one committer goroutine: it takes all requests queued while the
// previous commit was syncing (up to MaxBatchWrites) into one bbolt transaction and one fsync
// (group commit), so concurrent writers share commits. The queue holds MaxQueuedWrites; a
// caller's context bounds both its wait for room and its wait for the commit.
//
// # Digests
//
// Each keyspace keeps a Merkle tree (Tree) over the fixed hash space of its keys: the first
// LeafBits bits of SHA-256(key) select one of Leaves leaves; a leaf is the sum mod 2^256 of
// SHA-256(key, state digest) over its keys (see Tree for the choice over XOR), so a write
// updates it in O(1); inner nodes are hashed from their children lazily, on read. The tree
// lives in memory and is rebuilt from the index bucket at Open (about 22 ms for 100,000 keys).
//
// # Anti-entropy
//
// Session is one side of an exchange for one keyspace, a deterministic state machine over a
// Replica: root, then the hashes of differing subtrees DescentStep levels at a time, then the
// key lists (key, digest) of differing leaves, paginated, then the states each side lacks or
// holds different, both ways, merged with MergeRemoteBatch. Messages are this package's own
// encoding, validated and bounded by SessionConfig.MaxMessageBytes. Between equal replicas the
// exchange is two messages: the root and the answer that ends it.
//
// # Invariants
//
//   - A write's call returns only after its transaction is fsynced (unless Options.NoSync, for
//     tests); a refused write changes nothing, and a failed commit fails every write in it.
//   - The data bucket, the index bucket and the tree agree: a key's index entry is the digest
//     of its stored state, written in the same transaction, and the tree is updated from the
//     index entries after the commit; so the tree equals one rebuilt from the data.
//   - Equal states have equal encodings (crdt), so equal keyspaces have equal roots, and
//     replicas that completed a session without concurrent writes hold identical states.
//   - A register write is stamped by a clock that first learned the register's current stamp,
//     so a member's own write wins locally; MaxStamp persists the greatest stamp so a member
//     can restore its clock at start.
//   - Tombstones stay until PurgeTombstones drops those older than a watermark. The caller
//     must guarantee that every live member holds every tombstone below the watermark: a
//     tombstone purged while some member still has the older value lets anti-entropy bring the
//     value back (TestPurgeTooEarlyResurrects shows it).
//
// # Limits
//
// MaxKeyBytes, MaxKeyspaceNameBytes, MaxKeyspaces, MaxStateBytes (local operations; merges
// cannot refuse), MaxQueuedWrites, MaxBatchWrites; values and elements use the crdt limits
// (crdt.MaxRegisterValueBytes, crdt.MaxSetElementBytes, ...). Messages: DefaultMaxMessageBytes,
// MinMessageBytes, MaxMessageBytes. A state larger than a message (only a merged set can be)
// is not sent by anti-entropy and is counted in SessionStats.StatesOversize.
//
// # Not yet
//
// Each write rewrites its key's whole state, so large sets cost in proportion to their size.
// PurgeTombstones scans its keyspace in one transaction. Set removes leave no tombstones but
// their causal contexts grow with the members that wrote the set.
package avail
