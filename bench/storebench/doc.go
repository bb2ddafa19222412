// Package storebench measures the storage engine under caucus's state machine: it models the
// write, read, snapshot and compaction paths of internal/mvcc identically on bbolt and on Pebble,
// so that the choice of engine rests on numbers rather than on reasoning alone.
//
// # The model
//
// Both engines store the same four tables with the same keys and values as internal/mvcc (see
// its doc.go): kv (esc(key) 0x00 0x01 ^rev ^sub -> version record), live (key -> rev, sub,
// create, version, lease of the newest version), rev (rev sub -> flag + key) and meta (revision,
// applied index). bbolt keeps them as buckets; Pebble has one ordered key space, so each table's
// keys carry a one-byte table prefix, which preserves the order within a table.
//
// One Apply is one batch of committed Raft entries: every command is a put that first reads the
// key's previous live version (through the open transaction or indexed batch, so a key written
// earlier in the same batch is seen, as in the real apply), then writes the version record, the
// revision-log entry and the live entry; meta is written once per batch. Commits never fsync: the
// Raft WAL is the source of truth. bbolt commits with DB.NoSync; Pebble commits with
// pebble.NoSync and, by default, with its own WAL disabled (see PebbleOptions.WAL for why).
//
// Reads follow internal/mvcc: a point read looks up the live entry and then the version record;
// a range walks the live table and loads each value from kv. Every read sees one consistent
// state: a bbolt read transaction, or a Pebble iterator (a point-in-time view) and its clone.
//
// # Invariants
//
//   - The state after the same sequence of Apply calls is logically identical on both engines:
//     Dump returns the same tables, which the tests check.
//   - Revisions only grow; the applied index is written in the same batch as the data.
//   - A snapshot stream is a consistent copy of one committed state, and restoring it yields an
//     engine whose Dump equals the source's at the moment the snapshot was taken.
package storebench
